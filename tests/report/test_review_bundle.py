"""The viewer bundle shipped in the package: built from the committed sources, with the licences
of everything inside it."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web" / "review"
STATIC = resources.files("segqc.review") / "static"


def test_the_bundle_was_built_from_the_committed_sources():
    info = json.loads((STATIC / "BUILD_INFO.json").read_text())
    for name, digest in info["sources"].items():
        assert hashlib.sha256((WEB / name).read_bytes()).hexdigest() == digest, (
            f"web/review/{name} changed since the bundle was built: cd web/review && npm ci && npm run build")


def test_the_bundle_ships_niivue_with_the_licence_of_every_bundled_package():
    info = json.loads((STATIC / "BUILD_INFO.json").read_text())
    licences = (STATIC / "THIRD_PARTY_LICENSES.txt").read_text()
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"]
    assert info["versions"]["@niivue/niivue"] == lock["node_modules/@niivue/niivue"]["version"]
    for name, version in info["versions"].items():
        if name == "esbuild":  # the bundler, not in the bundle
            continue
        assert f"{name} {version}" in licences
    assert "BSD 2-Clause License" in licences and "Copyright (c) 2021, Niivue" in licences
    assert (STATIC / "review.js").read_bytes()[:200].strip()  # the bundle itself is there
