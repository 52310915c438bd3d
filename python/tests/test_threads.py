"""A compiled model serves many Python threads at once, and runs without holding the GIL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bnnc
from conftest import DATA

CNV = DATA / "models" / "cnv_w1a1"
TFC = DATA / "models" / "tfc_w1a1"


def test_threads_share_one_model():
    model = bnnc.compile(CNV / "model.onnx")
    x = np.load(CNV / "input.npy")
    expected = model(x)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: (i, model(x[i % 16 : i % 16 + 1 + i % 3])), range(96)))
    for i, y in results:
        np.testing.assert_array_equal(y, expected[i % 16 : i % 16 + 1 + i % 3])


def test_threads_compile_at_once():
    folders = [CNV, TFC, DATA / "models" / "lfc_w1a1", DATA / "external" / "zoo_tfc_2w2a"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(lambda f: bnnc.compile(f / "model.onnx"), folders))
    for folder, model in zip(folders, models):
        y = model(np.load(folder / "input.npy"))
        np.testing.assert_array_equal(y.argmax(1), np.load(folder / "expected.npy").argmax(1))


def test_the_gil_is_released_while_a_model_runs():
    model = bnnc.compile(CNV / "model.onnx")
    x = np.load(CNV / "input.npy")
    # A batch that runs for at least 0.3 s on this machine.
    big = x
    while True:
        start = time.perf_counter()
        model(big)
        alone = time.perf_counter() - start
        if alone >= 0.3:
            break
        big = np.concatenate([big, big])
    started = threading.Event()
    finished = threading.Event()

    def work():
        started.set()
        model(big)
        finished.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    # This thread needs the GIL back after each short sleep. Were the worker holding it
    # through the run, these sleeps would end only when the run does.
    start = time.perf_counter()
    for _ in range(5):
        time.sleep(0.002)
    waited = time.perf_counter() - start
    done_early = finished.is_set()
    worker.join()
    assert waited < alone / 2, f"waited {waited:.3f} s for the GIL during a {alone:.3f} s run"
    assert not done_early


def test_a_batch_split_over_threads_gives_the_same_outputs():
    model = bnnc.compile(TFC / "model.onnx")
    x = np.load(TFC / "test_x.npy").astype(np.float32)
    one = model(x)
    for threads in (0, 2, 3, 64):
        np.testing.assert_array_equal(model(x, threads=threads), one)
    np.testing.assert_array_equal(model(x[:1], threads=4), one[:1])
    with pytest.raises(OverflowError):
        model(x, threads=-1)
