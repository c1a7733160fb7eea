"""Shared fixtures: one engine on lavapipe (or any Vulkan adapter) and one on the noop
backend (host cost only). Without an adapter the tests fail with NoAdapterError, whose message
says what to install (apt-get install mesa-vulkan-drivers)."""

import os

import pytest

os.environ.setdefault("NODEVICE_SELECT", "1")  # Mesa's device-select layer errs when headless

import wgpu_batch as wb  # noqa: E402


@pytest.fixture(scope="session")
def engine():
    with wb.Engine(backends="vulkan") as e:
        yield e


@pytest.fixture(scope="session")
def noop():
    with wb.Engine(backends="noop") as e:
        yield e


@pytest.fixture(scope="session")
def saxpy(engine):
    return engine.kernel(wb.kernels.saxpy, label="saxpy")
