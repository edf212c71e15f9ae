"""The benchmarks' peer: KServe's Python ModelServer serving y = 0.5 x + 2 as model "half_plus_two",
over V1 REST, V2 REST and V2 gRPC (on PORT + 1).

Usage: python benches/kserve_peer.py PORT   (needs `pip install kserve`). Binds 127.0.0.1 only.
"""
import json
import sys

import grpc.aio._server as grpc_server
import numpy as np
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

# KServe binds 0.0.0.0 / [::]; benchmarks here must stay on loopback.
_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config
_add_port = grpc_server.Server.add_insecure_port
grpc_server.Server.add_insecure_port = lambda self, address: _add_port(self, "127.0.0.1:" + address.rsplit(":", 1)[-1])


class HalfPlusTwo(Model):
    def __init__(self):
        super().__init__("half_plus_two")
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):  # V2, REST or gRPC
            y = 0.5 * payload.inputs[0].as_numpy().astype(np.float32) + 2.0
            out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=False)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])
        if isinstance(payload, (bytes, bytearray)):  # KServe hands over raw bytes without a JSON content type
            payload = json.loads(payload)
        x = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": (0.5 * x + 2.0).tolist()}


if __name__ == "__main__":
    port = int(sys.argv[1])
    ModelServer(http_port=port, grpc_port=port + 1, workers=1).start([HalfPlusTwo()])
