"""trainer.precision: auto picks bf16 only with native bf16; an explicit bf16 without it warns; bad names refused."""
from __future__ import annotations

import logging

import pytest
import torch

from hyperdgm import precision
from hyperdgm.precision import resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert resolve_precision("FP32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bfloat16", torch.device("cpu")) == "bf16"  # explicit bf16 is honoured either way


def test_explicit_bf16_without_native_support_warns(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="hyperdgm.precision"):
        resolve_precision("bf16", torch.device("cpu"))
    assert "without native bf16" in caplog.text and "precision=auto" in caplog.text
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hyperdgm.precision"):
        resolve_precision("bf16", torch.device("cpu"))
    assert caplog.text == ""


def test_this_machine_reports_what_onednn_reports():
    want = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.native_bf16(torch.device("cpu")) is want
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if want else "fp32")


def test_unknown_precision_refused():
    with pytest.raises(ValueError, match="fp32, bf16 or auto, got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))
