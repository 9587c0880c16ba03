"""The e2e tests' cluster: the dev cluster from `hack/kind.sh up && skaffold run`.

The tests marked ``e2e`` use the ``cluster`` fixture. It skips them, with the reason, when no
cluster answers or the release is not deployed: always a skip, also under CI=true (CI has no
cluster by design). The offline checks in this folder (test_dev_loop_files.py) do not use it.

Some e2e tests change the cluster (they scale the generator, run a burst Job), so by default
they use only the kube context of the dev cluster, ``kind-loginpipe``, never whatever context
happens to be current. Environment (defaults):

  LOGINPIPE_TEST_KUBE_CONTEXT=kind-loginpipe   kubeconfig context to use; in a pod without a
                                               kubeconfig, the in-cluster service account is used
  LOGINPIPE_TEST_NAMESPACE=loginpipe           namespace of the release
  LOGINPIPE_TEST_RELEASE=loginpipe             Helm release name
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from tests.e2e.cluster import Cluster

HOW = "run `hack/kind.sh up && skaffold run` first"


def _load() -> tuple[client.ApiClient, str]:
    context = os.environ.get("LOGINPIPE_TEST_KUBE_CONTEXT", "kind-loginpipe")
    try:
        contexts, _ = config.list_kube_config_contexts()
    except (ConfigException, OSError) as exc:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg), "in-cluster"
        raise ConfigException(f"no kubeconfig ({exc})") from exc
    names = [c["name"] for c in contexts]
    if context not in names:
        raise ConfigException(
            f"kubeconfig has no context {context!r} (has: {', '.join(names) or 'none'}); "
            "set LOGINPIPE_TEST_KUBE_CONTEXT to use another cluster"
        )
    cfg = client.Configuration()
    config.load_kube_config(context=context, client_configuration=cfg)
    return client.ApiClient(cfg), context


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    namespace = os.environ.get("LOGINPIPE_TEST_NAMESPACE", "loginpipe")
    release = os.environ.get("LOGINPIPE_TEST_RELEASE", "loginpipe")
    try:
        api, context = _load()
    except ConfigException as exc:
        pytest.skip(f"no Kubernetes cluster reachable: {exc}; {HOW}")
    with api:
        try:
            version = client.VersionApi(api).get_code(_request_timeout=5)
            releases = client.CoreV1Api(api).list_namespaced_secret(
                namespace,
                label_selector=f"owner=helm,name={release}",
                _request_timeout=10,
            )
        except Exception as exc:  # any failure to talk to the API server means: no cluster
            pytest.skip(f"no Kubernetes cluster reachable: {type(exc).__name__}: {exc}; {HOW}")
        deployed = [
            s for s in releases.items if (s.metadata.labels or {}).get("status") == "deployed"
        ]
        if not deployed:
            pytest.skip(
                f"release {release!r} is not deployed in namespace {namespace!r} "
                f"of {context} (Kubernetes {version.git_version}); {HOW}"
            )
        yield Cluster(api=api, namespace=namespace, release=release, context=context)
