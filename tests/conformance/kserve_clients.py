"""Drives tensorserve with KServe's own clients and prints what they got, as JSON.

Run in its own interpreter: kserve's generated V2 stubs and tritonclient's both register the
`inference` package in protobuf's default pool, and one process cannot hold both."""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def run(base, address, model, x):
    out = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    out["v1_live"] = await v1.is_server_live(base)
    out["v1_ready"] = await v1.is_model_ready(base, model)
    r = await v1.infer(base, {"instances": x.tolist()}, model_name=model)
    out["v1"] = r["predictions"]
    await v1.close()

    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    out["v2_live"] = await v2.is_server_live(base)
    out["v2_server_ready"] = await v2.is_server_ready(base)
    out["v2_ready"] = await v2.is_model_ready(base, model)
    for binary in (False, True):
        i = InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        r = await v2.infer(base, InferRequest(model_name=model, infer_inputs=[i], request_id="r1"), model_name=model)
        out[f"v2_binary_{binary}"] = {"id": r.id, "y": r.outputs[0].as_numpy().tolist()}
    await v2.close()

    g = InferenceGRPCClient(address)
    out["grpc_live"] = await g.is_server_live()
    out["grpc_server_ready"] = await g.is_server_ready()
    out["grpc_ready"] = await g.is_model_ready(model)
    i = InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    r = await g.infer(InferRequest(model_name=model, infer_inputs=[i], request_id="g1"))
    out["grpc"] = {"id": r.id, "y": r.outputs[0].as_numpy().tolist()}
    await g.close()
    return out


if __name__ == "__main__":
    base, address, model, values = sys.argv[1:5]
    x = np.array(json.loads(values), np.float32)
    print(json.dumps(asyncio.run(run(base, address, model, x))))
