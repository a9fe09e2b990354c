"""probe_audio: the length a header claims is believed only after the bytes confirm it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from asyncml.tasks._audio_errors import AudioError, AudioNotAudio, AudioTruncated
from asyncml.tasks._probe import probe_audio, probe_wav_head

from .audio_files import (
    clear_flac_total_samples,
    cut,
    cut_in_half,
    mp3_frame_offsets,
    patch_wav_sizes,
    pcm_wav_bytes,
    write_audio,
)


@pytest.fixture
def wav_30s(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "tone.wav", seconds=30.0, sample_rate=16000)


@pytest.fixture
def mp3_30s(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "tone.mp3", seconds=30.0, sample_rate=16000, format="MP3")


def test_wav_reports_length_rate_channels_frames_and_format(wav_30s: Path) -> None:
    info = probe_audio(wav_30s)

    assert info.duration_s == pytest.approx(30.0, abs=0.01)
    assert (info.sample_rate, info.channels, info.frames, info.format) == (16000, 1, 480000, "WAV")


def test_audio_info_is_immutable(wav_30s: Path) -> None:
    info = probe_audio(wav_30s)

    with pytest.raises(AttributeError):
        info.duration_s = 1.0  # type: ignore[misc]


def test_flac_length_comes_from_streaminfo(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.flac", seconds=30.0, sample_rate=22050, format="FLAC")

    info = probe_audio(path)

    assert info.duration_s == pytest.approx(30.0, abs=0.01)
    assert (info.sample_rate, info.frames, info.format) == (22050, 661500, "FLAC")


def test_ogg_vorbis_length_comes_from_the_last_granule(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.ogg", seconds=30.0, format="OGG", subtype="VORBIS")

    info = probe_audio(path)

    assert info.duration_s == pytest.approx(30.0, abs=0.01)
    assert (info.sample_rate, info.format) == (16000, "OGG")


def test_mp3_length_comes_from_the_xing_header(mp3_30s: Path) -> None:
    info = probe_audio(mp3_30s)

    assert info.duration_s == pytest.approx(30.0, abs=0.01)
    assert (info.sample_rate, info.channels, info.format) == (16000, 1, "MP3")


def test_stereo_file_reports_two_channels(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "stereo.flac", seconds=5.0, channels=2, format="FLAC")

    info = probe_audio(path)

    assert (info.channels, info.frames) == (2, 80000)
    assert info.duration_s == pytest.approx(5.0, abs=0.01)


def test_stereo_mp3_at_44100_hz_reports_its_length(tmp_path: Path) -> None:
    path = write_audio(
        tmp_path / "s.mp3", seconds=10.0, sample_rate=44100, channels=2, format="MP3"
    )

    info = probe_audio(path)

    assert (info.channels, info.sample_rate) == (2, 44100)
    assert info.duration_s == pytest.approx(10.0, abs=0.01)


def test_wav_whose_header_claims_far_more_data_than_present_is_truncated(wav_30s: Path) -> None:
    patch_wav_sizes(wav_30s, data_bytes=100 * 960_000, riff_bytes=100 * 960_000 + 36)

    with pytest.raises(AudioTruncated, match=r"claims 96000000 bytes of audio \(3000\.00 s\)"):
        probe_audio(wav_30s)


def test_wav_cut_in_half_is_truncated_not_reported_as_shorter(
    wav_30s: Path, tmp_path: Path
) -> None:
    half = cut_in_half(wav_30s, tmp_path / "half.wav")

    with pytest.raises(AudioTruncated, match=r"claims .*\(30\.00 s\) but the file holds 15\.00 s"):
        probe_audio(half)


def test_wav_cut_inside_its_header_is_truncated(wav_30s: Path, tmp_path: Path) -> None:
    stub = cut(wav_30s, tmp_path / "stub.wav", keep=30)

    with pytest.raises(AudioTruncated, match="before its audio data starts"):
        probe_audio(stub)


def test_wav_with_a_wrong_riff_size_but_whole_data_chunk_is_measured(wav_30s: Path) -> None:
    patch_wav_sizes(wav_30s, data_bytes=960_000, riff_bytes=10**8)

    assert probe_audio(wav_30s).duration_s == pytest.approx(30.0, abs=0.01)


@pytest.mark.parametrize("unwritten", [0, 0xFFFFFFFF], ids=["zero", "all-ones"])
def test_wav_whose_data_size_was_never_written_is_measured_from_its_bytes(
    wav_30s: Path, unwritten: int
) -> None:
    patch_wav_sizes(wav_30s, data_bytes=unwritten)

    assert probe_audio(wav_30s).frames == 480000


def test_flac_cut_in_half_is_truncated(tmp_path: Path) -> None:
    whole = write_audio(tmp_path / "tone.flac", seconds=30.0, format="FLAC")

    with pytest.raises(AudioTruncated, match=r"FLAC file ends before the 30\.00 s"):
        probe_audio(cut_in_half(whole, tmp_path / "half.flac"))


def test_flac_missing_only_its_last_bytes_is_truncated(tmp_path: Path) -> None:
    whole = write_audio(tmp_path / "tone.flac", seconds=30.0, format="FLAC")

    with pytest.raises(AudioTruncated):
        probe_audio(cut(whole, tmp_path / "short.flac", keep=whole.stat().st_size - 3))


def test_flac_without_total_samples_is_measured_by_decoding(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "stream.flac", seconds=30.0, format="FLAC")
    clear_flac_total_samples(path)

    assert probe_audio(path).frames == 480000


def test_ogg_cut_in_half_is_truncated(tmp_path: Path) -> None:
    whole = write_audio(tmp_path / "tone.ogg", seconds=30.0, format="OGG", subtype="VORBIS")

    with pytest.raises(AudioTruncated, match="last page is incomplete"):
        probe_audio(cut_in_half(whole, tmp_path / "half.ogg"))


def test_ogg_cut_exactly_before_its_last_page_is_truncated(tmp_path: Path) -> None:
    whole = write_audio(tmp_path / "tone.ogg", seconds=30.0, format="OGG", subtype="VORBIS")
    last_page = whole.read_bytes().rfind(b"OggS")

    with pytest.raises(AudioTruncated, match="without an end-of-stream page"):
        probe_audio(cut(whole, tmp_path / "short.ogg", keep=last_page))


def test_mp3_cut_in_half_is_truncated(mp3_30s: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioTruncated, match="MP3 file is truncated"):
        probe_audio(cut_in_half(mp3_30s, tmp_path / "half.mp3"))


def test_mp3_cut_at_a_frame_boundary_is_truncated(mp3_30s: Path, tmp_path: Path) -> None:
    offsets = mp3_frame_offsets(mp3_30s.read_bytes())
    short = cut(mp3_30s, tmp_path / "short.mp3", keep=offsets[len(offsets) // 2])

    with pytest.raises(AudioTruncated, match=r"header claims 30\.00 s but the file holds 1"):
        probe_audio(short)


def test_mp3_without_xing_header_is_measured_by_counting_frames(
    mp3_30s: Path, tmp_path: Path
) -> None:
    # libsndfile estimates such a file from its first frame's bitrate: ~3 s for this one.
    data = mp3_30s.read_bytes()
    offsets = mp3_frame_offsets(data)
    bare = tmp_path / "bare.mp3"
    bare.write_bytes(data[offsets[1] :])

    # Without the LAME tag nothing trims encoder delay and padding (~0.1 s).
    assert probe_audio(bare).duration_s == pytest.approx(30.0, abs=0.15)


def test_text_file_named_wav_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not a recording\n" * 20)

    with pytest.raises(AudioNotAudio, match="not a recognised audio format"):
        probe_audio(path)


def test_random_bytes_are_not_audio(tmp_path: Path) -> None:
    noise = np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.bin"
    path.write_bytes(b"\x00" + noise)  # a leading 0xFF could pass for an MPEG frame sync

    with pytest.raises(AudioNotAudio, match="not a recognised audio format"):
        probe_audio(path)


def test_empty_file_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()

    with pytest.raises(AudioNotAudio, match="empty"):
        probe_audio(path)


def test_not_audio_message_does_not_reveal_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "secret-dir-name.wav"
    path.write_text("plain text")

    with pytest.raises(AudioNotAudio) as caught:
        probe_audio(path)

    assert "secret-dir-name" not in caught.value.message


def test_audio_errors_carry_the_stable_type_of_their_class(tmp_path: Path) -> None:
    path = tmp_path / "empty.ogg"
    path.touch()

    with pytest.raises(AudioError) as caught:
        probe_audio(path)

    assert caught.value.to_body()["type"] == "audio_not_audio"


def test_header_probe_does_not_import_librosa(wav_30s: Path) -> None:
    # A fresh interpreter: other tests in this process may have imported librosa already.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from asyncml.tasks._probe import probe_audio
        info = probe_audio(Path(sys.argv[1]))
        print(info.frames, "librosa" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(wav_30s)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert done.stdout.split() == ["480000", "False"]


def test_wav_whose_header_claims_an_implausible_sample_rate_is_not_audio(
    wav_30s: Path, tmp_path: Path
) -> None:
    data = bytearray(wav_30s.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12 : fmt + 16] = (50_000_000).to_bytes(4, "little")  # 50 MHz
    liar = tmp_path / "liar.wav"
    liar.write_bytes(bytes(data))
    with pytest.raises(AudioNotAudio, match="implausible 50000000 Hz"):
        probe_audio(liar)


# A 1 Hz header over 16,000 frames of 16-bit mono: 32,000 bytes that claim 4 h 26 min.
ONE_HERTZ = pcm_wav_bytes(sample_rate=1, frames=16_000)
# 16-bit stereo needs 4 bytes a frame; a block align of 1 claims 4x the frames the bytes hold.
THIN_FRAMES = pcm_wav_bytes(sample_rate=16_000, frames=16_000, channels=2, block_align=1)


def test_wav_at_1_hz_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "slow.wav"
    path.write_bytes(ONE_HERTZ)

    with pytest.raises(AudioNotAudio, match=r"implausible 1 Hz .*at least 1000 Hz"):
        probe_audio(path)


def test_wav_head_at_1_hz_is_not_audio() -> None:
    with pytest.raises(AudioNotAudio, match=r"implausible 1 Hz .*at least 1000 Hz"):
        probe_wav_head(ONE_HERTZ, len(ONE_HERTZ))


@pytest.mark.parametrize("rate", [1000, 768_000])
def test_wav_at_either_end_of_the_accepted_rates_is_measured(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "edge.wav"
    path.write_bytes(pcm_wav_bytes(sample_rate=rate, frames=2 * rate))

    assert probe_audio(path).duration_s == pytest.approx(2.0)


def test_wav_whose_frames_are_smaller_than_its_samples_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "thin.wav"
    path.write_bytes(THIN_FRAMES)

    with pytest.raises(AudioTruncated, match=r"2 channels of 16-bit samples need 4 bytes a frame"):
        probe_audio(path)


def test_wav_head_whose_frames_are_smaller_than_its_samples_is_truncated() -> None:
    with pytest.raises(AudioTruncated, match=r"2 channels of 16-bit samples need 4 bytes a frame"):
        probe_wav_head(THIN_FRAMES, len(THIN_FRAMES))


def test_file_too_large_to_decode_in_full_fails_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncml.tasks._probe import decode

    monkeypatch.setattr(decode, "MAX_FULL_DECODE_BYTES", 1000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01" * 2000)  # libsndfile cannot open it: only a full decode could
    with pytest.raises(AudioError, match="too large to decode in full"):
        probe_audio(blob)
