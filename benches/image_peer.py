"""The server a user would write instead: TF Serving's gRPC Predict in Python, decoding the
`image_bytes` of each request with Pillow, normalising with numpy and running the same ONNX
model in onnxruntime. Usage: image_peer.py PORT MODEL_DIR (the model is MODEL_DIR/model.onnx,
input `image` float [N, 224, 224, 3]).
"""
import io
import sys
from concurrent import futures

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def decode(data):
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR)
    return (np.asarray(img, np.float32) / 255.0 - MEAN) / STD


class Predictor(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def Predict(self, request, context):
        images = request.inputs["image_bytes"].string_val
        batch = np.stack([decode(b) for b in images])
        scores, prediction = self.session.run(["scores", "prediction"], {"image": batch})
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        s = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=scores.tobytes())
        s.tensor_shape.dim.add(size=scores.shape[0])
        s.tensor_shape.dim.add(size=scores.shape[1])
        p = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=prediction.tolist())
        p.tensor_shape.dim.add(size=prediction.shape[0])
        response.outputs["scores"].CopyFrom(s)
        response.outputs["prediction"].CopyFrom(p)
        return response


def main():
    port, model_dir = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Predictor(f"{model_dir}/model.onnx"), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
