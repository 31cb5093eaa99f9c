"""A Ray Serve application whose one replica must run on the node with the ``node2`` resource.

Submitted as a job to the multi-node test cluster: it starts Serve with its HTTP proxy on the
head only (two proxies on one machine would want the same port) and returns. The replica
answers with the name of the node it runs on (each test node's environment names it).
"""

from __future__ import annotations

import os
import sys

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"node2": 0.01}})
class WhereAmI:
    def __call__(self, request) -> dict:
        return {"node": os.environ.get("RAYMLP_TEST_NODE", "?"), "pid": os.getpid()}


if __name__ == "__main__":
    port = int(sys.argv[1])
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(WhereAmI.bind(), name="where", route_prefix="/where", blocking=False)
    print("deployed", flush=True)
