"""Runs the descriptor-identity check as part of the conformance suite."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_descriptors  # noqa: E402
from conftest import ROOT  # noqa: E402


def test_our_protos_are_wire_identical_to_tf_serving_and_kserve_v2():
    path = os.environ.get("TENSORSERVE_FDS")
    if not path:
        dump = os.path.join(ROOT, "target", "release", "examples", "dump_descriptors")
        assert os.path.exists(dump), "build it: cargo build --release --example dump_descriptors"
        path = os.path.join(tempfile.mkdtemp(), "tensorserve_descriptors.pb")
        subprocess.run([dump, path], check=True)
    diffs, summary = check_descriptors.check(path)
    assert not diffs, "\n".join(diffs)
    print("descriptor identity:", summary)
