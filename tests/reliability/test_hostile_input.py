"""Faults 4 to 7, 10 and 11: malicious pickles, hostile archives, bad downloads, bad inputs,
size bombs and oversized images."""

from __future__ import annotations

import pickle

import pytest

from skiplab.selftest import archives, bombs, downloads, hostile_files, inputs
from skiplab.selftest.common import TrialFailed, tiny_data
from tests.reliability.conftest import assert_all_passed


def test_malicious_pickles_are_never_executed(tmp_path):
    result = hostile_files.run(tmp_path)
    assert result.trials == 11
    assert_all_passed(result)


def test_control_fails_for_a_harmless_pickle(tmp_path):
    with pytest.raises(TrialFailed, match="control"):
        hostile_files.control(pickle.dumps({"a": 1}), "pickle", tmp_path / "sentinel")


def test_hostile_archives_are_refused_before_writing(tmp_path):
    result = archives.run(tmp_path)
    assert result.trials == 12
    assert_all_passed(result)


def test_harness_detects_an_accepted_archive(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    benign = [(archives.tar_info("train/c0/0.png"), b"x")]
    with pytest.raises(TrialFailed, match="safe_extract accepted the archive"):
        archives.trial(tmp_path, "benign", "tar", benign, "train/c0/0.png", outside)


def test_bad_downloads(tmp_path):
    result = downloads.run(tmp_path)
    assert result.trials == 6
    assert_all_passed(result)


def test_harness_detects_an_accepted_download(tmp_path):
    with downloads.Server() as base, pytest.raises(TrialFailed, match="accepted"):
        downloads.trial(base, tmp_path, "good", "download_file")


def test_bad_inputs_fail_before_training(tmp_path):
    result = inputs.run(tmp_path)
    assert result.trials == 10
    assert_all_passed(result)


def test_harness_detects_an_accepted_input(tmp_path):
    with pytest.raises(TrialFailed, match="no error: the bad input was accepted"):
        inputs.Trials(tmp_path)._refused("good", (), tiny_data)


def test_size_bombs_are_refused_in_bounded_memory(tmp_path):
    result = bombs.run_archives(tmp_path)
    assert result.trials == 10
    assert_all_passed(result)
    assert all(" MiB at the call)" in d and "\n" not in d for d in result.details)


def test_oversized_images_are_refused_in_every_path(tmp_path):
    result = bombs.run_images(tmp_path)
    assert result.trials == 8
    assert_all_passed(result)


def test_harness_detects_an_accepted_bomb_and_a_memory_peak(tmp_path):
    source = tmp_path / "input.bin"
    source.write_bytes(b"x")
    with pytest.raises(TrialFailed, match="no error: the bomb was accepted"):
        bombs.refused(lambda: None, (), source, ())

    def hungry():
        block = b"\x01" * (bombs.PEAK_GROWTH_BOUND + 2**20)  # touched, so resident
        raise ValueError(f"refused after holding {len(block)} bytes")

    with pytest.raises(TrialFailed, match="peak memory grew by"):
        bombs.refused(hungry, ("refused",), source, ())
    written = tmp_path / "out"

    def writes():
        written.mkdir()
        raise ValueError("refused")

    with pytest.raises(TrialFailed, match="out changed"):
        bombs.refused(writes, ("refused",), source, (written,))
