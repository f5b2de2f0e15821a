import shutil
from pathlib import Path

from voxray import protogen
from voxray.v1 import asr_pb2, llm_pb2, moshi_pb2, tts_pb2


def test_committed_stubs_match_the_protos() -> None:
    assert protogen.stale_stubs() == []


def test_a_changed_proto_makes_the_stubs_stale(tmp_path: Path) -> None:
    shutil.copytree(protogen.PROTO_ROOT, tmp_path / "protos")
    asr = tmp_path / "protos" / "voxray" / "v1" / "asr.proto"
    asr.write_text(asr.read_text().replace("uint32 sample_rate = 1;", "uint32 rate = 1;"))
    assert "asr_pb2.py" in protogen.stale_stubs(tmp_path / "protos")


def test_every_stage_has_its_streaming_rpc() -> None:
    methods = {
        asr_pb2: ("Asr", "Transcribe", True, True),
        llm_pb2: ("Llm", "Generate", False, True),
        tts_pb2: ("Tts", "SynthesizeStream", True, True),
        moshi_pb2: ("Moshi", "Converse", True, True),
    }
    for module, (service, method, client_stream, server_stream) in methods.items():
        m = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        assert (m.client_streaming, m.server_streaming) == (client_stream, server_stream)
    assert tts_pb2.DESCRIPTOR.services_by_name["Tts"].methods_by_name["Synthesize"].server_streaming


def test_every_message_carries_meta() -> None:
    for module in (asr_pb2, llm_pb2, tts_pb2, moshi_pb2):
        for name in [n for n in module.DESCRIPTOR.message_types_by_name if n.endswith(
                ("Request", "Event"))]:
            fields = module.DESCRIPTOR.message_types_by_name[name].fields_by_name
            assert "meta" in fields, f"{module.__name__}.{name} has no meta"
