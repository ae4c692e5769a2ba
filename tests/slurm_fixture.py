"""pytest fixtures for the `slurm` tests: one real single-node cluster per session (tests/slurm_cluster.py).

Skips (with the reason) only when this machine cannot have SLURM: not Linux, not root, no apt-get, or
apt-get cannot install slurm-wlm/munge, or another cluster already holds the ports. A cluster that is
installed but fails to start is an error, not a skip.
"""

from __future__ import annotations

import pytest

from tests import slurm_cluster


@pytest.fixture(scope="session")
def slurm_session():
    from filelock import FileLock

    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    # one cluster per machine: concurrent pytest sessions queue here instead of fighting over the ports
    with FileLock("/tmp/pg-slurm.lock", timeout=900):
        try:
            slurm_cluster.install()
        except slurm_cluster.ClusterUnavailable as e:
            pytest.skip(f"cannot install SLURM here: {e}")
        if slurm_cluster._port_busy(6817) or slurm_cluster._port_busy(6818):
            pytest.skip("ports 6817/6818 are taken by a SLURM cluster this session did not start")
        cluster = slurm_cluster.start()
        try:
            yield cluster
        finally:
            slurm_cluster.stop(cluster)


@pytest.fixture
def slurm(slurm_session):
    """The session cluster; whatever a test leaves queued is cancelled after it (frees the CPUs)."""
    yield slurm_session
    slurm_session.cancel_all()
