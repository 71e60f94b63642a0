"""Build script for reprod_client: generates the gRPC stubs at build time.

The stubs are never committed. `build_py` runs grpc_tools.protoc over
proto/reprod/v1/*.proto (found at ../../proto relative to this file, or at
$REPROD_PROTO_DIR) and writes them as the package reprod_client._proto, with
protoc's absolute imports (`from reprod.v1 import tensor_pb2`) rewritten to
package-relative ones (`from . import tensor_pb2`) so that nothing named
`reprod` is added to the top-level import namespace.

A regular install writes the stubs into the build tree (they end up in the
wheel); an editable install (`pip install -e`) writes them into
reprod_client/_proto/ in the source tree (git-ignored).
"""
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
STUB_PACKAGE = ("reprod_client", "_proto")
_ABS_IMPORT = re.compile(r"^from reprod\.v1 import ", re.MULTILINE)


def find_proto_dir():
    """Returns the directory holding reprod/v1/*.proto or exits with a clear
    message naming where it looked."""
    env = os.environ.get("REPROD_PROTO_DIR")
    candidate = Path(env) if env else HERE.parent.parent / "proto"
    protos = sorted((candidate / "reprod" / "v1").glob("*.proto"))
    if not protos:
        where = f"$REPROD_PROTO_DIR={env}" if env else str(candidate)
        sys.exit(
            f"reprod_client: no reprod/v1/*.proto under {where}. The stubs are "
            "generated from the reprod repository's proto/ directory at build "
            "time: build from a checkout (client/python next to proto/) or set "
            "REPROD_PROTO_DIR to the directory that contains reprod/v1/.")
    return candidate, protos


def generate_stubs(out_dir):
    """Runs protoc (grpc_tools) and writes the rewritten stubs to out_dir.
    Returns the written paths."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit("reprod_client: grpcio-tools is needed at build time to "
                 "generate the gRPC stubs (pip install grpcio-tools; with "
                 "--no-build-isolation it must be in the building environment)")
    proto_dir, protos = find_proto_dir()
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir = Path(out_dir)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
                f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *map(str, protos)]
        if protoc.main(args) != 0:
            sys.exit(f"reprod_client: protoc failed on {proto_dir}/reprod/v1/*.proto")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        init = out_dir / "__init__.py"
        init.write_text('"""Generated from proto/reprod/v1 at build time; do not edit."""\n')
        written.append(init)
        for src in sorted((Path(tmp) / "reprod" / "v1").iterdir()):
            text = _ABS_IMPORT.sub("from . import ", src.read_text())
            if re.search(r"^\s*(from|import) reprod\b", text, re.MULTILINE):
                sys.exit(f"reprod_client: unexpected absolute import left in {src.name}")
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    return written


class BuildPyWithStubs(build_py):
    """build_py that also generates reprod_client/_proto from the protos."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = HERE.joinpath(*STUB_PACKAGE)
        else:
            target = Path(self.build_lib).joinpath(*STUB_PACKAGE)
        self._stubs = [str(p) for p in generate_stubs(target)]

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + list(getattr(self, "_stubs", []))


setup(cmdclass={"build_py": BuildPyWithStubs})
