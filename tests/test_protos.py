"""protos/: the committed generated code matches echo.proto, and the contract in DESIGN.md
(package, messages, field numbers and types, the four RPC shapes) is what the descriptor says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from protos import echo_pb2, echo_pb2_grpc
from tests import procs

T = FieldDescriptor
CONTRACT = {
    "Frame": {
        "seq": (1, T.TYPE_UINT64),
        "intended_send_ns": (2, T.TYPE_INT64),
        "sent_ns": (3, T.TYPE_INT64),
        "payload": (4, T.TYPE_BYTES),
    },
    "StreamRequest": {
        "count": (1, T.TYPE_UINT32),
        "payload_bytes": (2, T.TYPE_UINT32),
        "interval_ms": (3, T.TYPE_UINT32),
        "sent_ns": (4, T.TYPE_INT64),
    },
    "StreamSummary": {
        "frames": (1, T.TYPE_UINT64),
        "bytes": (2, T.TYPE_UINT64),
        "first_seq": (3, T.TYPE_UINT64),
        "last_seq": (4, T.TYPE_UINT64),
    },
}
# name: (input, output, client streams, server streams)
RPCS = {
    "Unary": ("Frame", "Frame", False, False),
    "ServerStream": ("StreamRequest", "Frame", False, True),
    "ClientStream": ("Frame", "StreamSummary", True, False),
    "Bidi": ("Frame", "Frame", True, True),
}


def check(*extra: str, cwd: Path = procs.ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-m", "protos.generate", "--check", *extra],
        cwd=cwd,
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_committed_generated_code_matches_the_proto() -> None:
    result = check()
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(60)
def test_drift_is_detected(tmp_path: Path) -> None:
    """A copy of protos/ with one field added must fail --check, naming the drifted files."""
    copy = tmp_path / "protos"
    shutil.copytree(procs.ROOT / "protos", copy, ignore=shutil.ignore_patterns("__pycache__"))
    proto = copy / "echo.proto"
    proto.write_text(
        proto.read_text().replace("bytes payload = 4;", "bytes payload = 4;\n  uint32 extra = 5;")
    )
    result = subprocess.run(
        [procs.PYTHON, "-m", "protos.generate", "--check"],
        cwd=tmp_path,
        env={**procs.env(), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "echo_pb2.py" in result.stderr and "python -m protos.generate" in result.stderr


def test_messages_and_field_numbers_are_the_contract() -> None:
    assert echo_pb2.DESCRIPTOR.package == "echoswarm.v1"
    for message, fields in CONTRACT.items():
        descriptor = echo_pb2.DESCRIPTOR.message_types_by_name[message]
        for name, (number, kind) in fields.items():
            field = descriptor.fields_by_name[name]
            assert (field.number, field.type) == (number, kind), f"{message}.{name}"
            assert not field.message_type


def test_service_has_the_four_rpc_shapes() -> None:
    service = echo_pb2.DESCRIPTOR.services_by_name["Echo"]
    assert service.full_name == "echoswarm.v1.Echo"
    for name, (request, reply, client_streams, server_streams) in RPCS.items():
        method = service.methods_by_name[name]
        assert method.input_type.name == request
        assert method.output_type.name == reply
        assert method.client_streaming is client_streams, name
        assert method.server_streaming is server_streams, name
    assert {"EchoStub", "EchoServicer", "add_EchoServicer_to_server"} <= set(dir(echo_pb2_grpc))
