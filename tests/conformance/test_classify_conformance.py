"""TF Serving's testClassify / testRegress / testMultiInference (and their REST twins) with the official client."""
import grpc
import pytest
import requests
from tensorflow_serving.apis import (classification_pb2, inference_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)


def add_x(input_, value=2.0, feature="x"):
    example = input_.example_list.examples.add()
    example.features.feature[feature].float_list.value.extend([value])


def test_classify(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    add_x(request.input)
    result = stub.Classify(request, 10.0)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert result.result.classifications[0].classes[0].label == ""
    assert result.model_spec.name == "half_plus_two"
    assert result.model_spec.signature_name == "classify_x_to_y"
    assert result.model_spec.version.value == 123


def test_regress(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    add_x(request.input)
    result = stub.Regress(request, 10.0)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    assert result.model_spec.signature_name == "regress_x_to_y"
    assert result.model_spec.version.value == 123

    request.model_spec.signature_name = "regress_x2_to_y3"
    request.input.Clear()
    add_x(request.input, feature="x2")
    assert stub.Regress(request, 10.0).result.regressions[0].value == 4.0


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in [("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")]:
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    add_x(request.input)
    result = stub.MultiInference(request, 10.0)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for r, signature in zip(result.results, ["regress_x_to_y", "classify_x_to_y"]):
        assert r.model_spec.name == "half_plus_two"
        assert r.model_spec.signature_name == signature
        assert r.model_spec.version.value == 123


def test_classify_errors(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request, 10.0)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    example = request.input.example_list.examples.add()
    example.features.feature["x"].int64_list.value.append(2)
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request, 10.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == ("Name: <unknown>, Key: x, Index: 0.  Data types don't match. "
                                    "Data type: int64 but expected type: float")


def test_iris_named_classes(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "iris"
    example = request.input.example_list_with_context.examples.add()
    example.features.feature["petal_length"].float_list.value.append(6.1)
    example.features.feature["petal_width"].float_list.value.append(2.3)
    context = request.input.example_list_with_context.context
    context.features.feature["sepal_length"].float_list.value.append(7.7)
    context.features.feature["sepal_width"].float_list.value.append(3.0)
    classes = stub.Classify(request, 10.0).result.classifications[0].classes
    assert [c.label for c in classes] == ["setosa", "versicolor", "virginica"]
    assert max(classes, key=lambda c: c.score).label == "virginica"


def test_rest_classify_and_regress(server):
    url = f"{server.rest_url}/v1/models/half_plus_two"
    r = requests.post(f"{url}:classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 3.0]]]}
    r = requests.post(f"{url}:regress", json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [3.0]}
    r = requests.post(f"{url}:classify", json={"signature_name": "classify_x_to_y"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"] == "When method is classify, key 'examples' is expected and was not found"
