"""Stand-ins for tensorflow_model_server: its REST and gRPC protocols over a SavedModel.

tensorflow_model_server is neither on PyPI nor in Debian here and docker cannot pull
images, so the tests talk to these: each loads the SavedModel in process and answers
TF Serving's requests with its signatures. The protocol details follow TF Serving's
REST API documentation (columnar ``inputs`` / ``outputs``, ``{"b64": ...}`` for string
values, output names ending in ``_bytes`` base64-encoded) and its PredictionService
protos (``tensorflow-serving-api``).
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import tensorflow as tf

DTYPES = {tf.float32: "DT_FLOAT", tf.string: "DT_STRING", tf.int32: "DT_INT32"}


def _signatures(saved_model: Path) -> dict:
    loaded = tf.saved_model.load(str(saved_model))
    return {name: loaded.signatures[name] for name in loaded.signatures}


def _tensor_info(spec) -> dict:
    dims = [{"size": str(-1 if d is None else d)} for d in spec.shape.as_list()]
    return {"dtype": DTYPES[spec.dtype], "tensor_shape": {"dim": dims}}


def _from_json(value, spec):
    """A REST input value as a tensor: ``{"b64": ...}`` objects are bytes."""
    if spec.dtype == tf.string:
        decode = lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict) else v  # noqa: E731
        value = decode(value) if not isinstance(value, list) else [decode(v) for v in value]
    return tf.constant(value, spec.dtype)


def _to_json(name: str, tensor):
    """An output tensor as TF Serving writes it: string outputs named *_bytes as base64."""
    value = tensor.numpy()
    if tensor.dtype == tf.string and name.endswith("_bytes"):
        encode = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
        return encode(value) if isinstance(value, bytes) else [encode(b) for b in value.ravel()]
    return value.tolist()


def fake_tf_serving(
    saved_model: Path, name: str, only: list[str] | None = None
) -> ThreadingHTTPServer:
    """TF Serving's REST API for the SavedModel at ``saved_model``, served as model ``name``.

    ``only`` limits the signatures served (an export from before ``separate_song``).
    ``server.calls`` lists the signature of each predict request.
    """
    fns = {k: v for k, v in _signatures(saved_model).items() if only is None or k in only}
    metadata = {
        "model_spec": {"name": name, "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    key: {
                        "inputs": {
                            k: _tensor_info(v) for k, v in fn.structured_input_signature[1].items()
                        },
                        "outputs": {k: _tensor_info(v) for k, v in fn.structured_outputs.items()},
                        "method_name": "tensorflow/serving/predict",
                    }
                    for key, fn in fns.items()
                }
            }
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == f"/v1/models/{name}/metadata":
                self.reply(200, metadata)
            else:
                self.reply(404, {"error": f"Servable not found for request: {self.path}"})

        def do_POST(self):
            if self.path != f"/v1/models/{name}:predict":
                return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = request.get("signature_name", "serving_default")
            self.server.calls.append(signature)
            if signature not in fns:
                return self.reply(
                    400, {"error": f'Serving signature name: "{signature}" not found'}
                )
            fn = fns[signature]
            specs = fn.structured_input_signature[1]
            try:
                inputs = request["inputs"]
                if not isinstance(inputs, dict) or set(inputs) != set(specs):
                    (only_input,) = specs  # a bare value feeds the one input
                    inputs = {only_input: inputs}
                outputs = fn(**{k: _from_json(v, specs[k]) for k, v in inputs.items()})
                answer = {"outputs": {k: _to_json(k, v) for k, v in outputs.items()}}
            except Exception as e:  # TF Serving answers 400 with the error text
                return self.reply(400, {"error": str(e).strip().splitlines()[0]})
            self.reply(200, answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.calls = []  # the signature of each predict request, in order
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def grpc_tf_serving(saved_model: Path, name: str):
    """TF Serving's gRPC PredictionService.Predict for the SavedModel; returns (server, port)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    fns = _signatures(saved_model)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != name:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}"
                )
            fn = fns[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in fn(**inputs).items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value.numpy())))
            return response

    # TF Serving lifts gRPC's 4 MB limit on what it receives and sends; so does this.
    unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=unlimited)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
