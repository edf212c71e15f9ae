#!/usr/bin/env python3
"""Converts a TF Serving model tree (SavedModel versions) into what tensorserve serves.

For each numeric version directory BASE/<version>/ holding saved_model.pb it writes:
  <version>/model.onnx         every convertible signature of the SavedModel in one ONNX graph (tf2onnx)
  <version>/signatures.pbtxt   the SavedModel's signature_def map as a text-format
                               tensorflow.serving.SignatureDefMap whose TensorInfo names are ONNX tensors
  <version>/assets.extra/tf_serving_warmup_requests   copied when the SavedModel has one

All signatures are called from one tf.function and frozen the way `python -m tf2onnx.convert
--saved-model` freezes one, then converted together with tf2onnx's Python API. ONNX inputs and
outputs keep the SavedModel's TensorInfo names (`x:0`, `serving_default_image:0`); where TF1
signatures share a tensor that becomes one copy per signature here, the first signature
(serving_default, then by key) keeps the name and the others get `<key>/<name>`.

Classify and regress signatures that take serialized tf.Examples (a string tensor parsed by
ParseExample, which ONNX has no op for) are converted from the parsed features on: each dense
feature becomes an input `<key>/<feature>` whose alias is the feature key, as tensorserve's
Classify and Regress fill inputs from tf.Example features; FixedLenFeature defaults become the
signature's `defaults`. A predict signature over serialized tf.Examples cannot be converted.

A signature that fails (an op tf2onnx cannot map, an input of unknown rank...) is reported
with its reason; the version is then not written unless --allow_partial is given.

Usage (see --help):
  tfserving_to_onnx.py --base_path /models/half_plus_two [--output_base /onnx/half_plus_two]
  tfserving_to_onnx.py --model_config_file models.config [--output_base /onnx] [--keep_going]

Install its dependencies with `pip install -r tools/requirements-convert.txt`.
"""
import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

# Keeps TensorFlow's C++ start-up chatter out of the report; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_FILE = "model.onnx"
SIGNATURES_FILE = "signatures.pbtxt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PARSE_EXAMPLE_OPS = ("ParseExample", "ParseExampleV2")

class ConversionError(Exception):
    """A version or signature that cannot be converted; the message is the reason reported."""


# ---------------------------------------------------------------------------------------------
# Protos: TF Serving's own classes when tensorflow-serving-api is installed, else the messages
# this tool reads and writes, declared here (text format needs field names and numbers to match,
# binary parsing only the numbers of the fields read).
# ---------------------------------------------------------------------------------------------

def _message_classes():
    """Returns ModelServerConfig, SignatureDefMap and PredictionLog message classes."""
    from tensorflow.core.protobuf import meta_graph_pb2  # noqa: F401  registers tensorflow.SignatureDef
    try:
        from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2
        from tensorflow_serving.config import model_server_config_pb2
        return SimpleNamespace(ModelServerConfig=model_server_config_pb2.ModelServerConfig,
                               SignatureDefMap=get_model_metadata_pb2.SignatureDefMap,
                               PredictionLog=prediction_log_pb2.PredictionLog)
    except ImportError:
        pass

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    package = "tensorserve.tools.tfserving_subset"
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorserve/tools/tfserving_subset.proto", package=package, syntax="proto3",
        dependency=["google/protobuf/any.proto", "tensorflow/core/protobuf/meta_graph.proto"])
    string, int64, msg_t, enum_t = F.TYPE_STRING, F.TYPE_INT64, F.TYPE_MESSAGE, F.TYPE_ENUM

    def message(name, *fields, parent=None):
        """Declares a message; each field is (name, number, type, type name or None[, "repeated"])."""
        msg = (parent.nested_type if parent else file.message_type).add(name=name)
        for field_name, number, kind, type_name, *repeated in fields:
            field = msg.field.add(name=field_name, number=number, type=kind,
                                  label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = type_name if type_name.startswith(".") else f".{package}.{type_name}"
        return msg

    def map_field(parent, name, number, key_type, value_type, value_type_name=None):
        entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
        entry = message(entry_name, ("key", 1, key_type, None), ("value", 2, value_type, value_type_name),
                        parent=parent)
        entry.options.map_entry = True
        parent.field.add(name=name, number=number, type=msg_t, label=F.LABEL_REPEATED,
                         type_name=f".{parent_names[id(parent)]}.{entry_name}")

    # tensorflow_serving/config/model_server_config.proto with the messages it uses. All of
    # ModelConfig is declared, though only name, base_path and model_platform are read, so that
    # a misspelt field is an error as in TF Serving rather than silently skipped.
    model_type = file.enum_type.add(name="ModelType")
    for number, value in enumerate(["MODEL_TYPE_UNSPECIFIED", "TENSORFLOW", "OTHER"]):
        model_type.value.add(name=value, number=number)
    policy = message("ServableVersionPolicy", ("latest", 100, msg_t, "ServableVersionPolicy.Latest"),
                     ("all", 101, msg_t, "ServableVersionPolicy.All"),
                     ("specific", 102, msg_t, "ServableVersionPolicy.Specific"))
    message("Latest", ("num_versions", 1, F.TYPE_UINT32, None), parent=policy)
    message("All", parent=policy)
    message("Specific", ("versions", 1, int64, None, "repeated"), parent=policy)
    message("LogCollectorConfig", ("type", 1, string, None), ("filename_prefix", 2, string, None))
    message("PerTaskSamplingConfig", ("dc", 1, string, None), ("task_index", 2, F.TYPE_INT32, None),
            ("sampling_rate", 3, F.TYPE_DOUBLE, None))
    message("SamplingConfig", ("sampling_rate", 1, F.TYPE_DOUBLE, None), ("attributes", 2, F.TYPE_INT32, None),
            ("per_task_sampling_configs", 3, msg_t, "PerTaskSamplingConfig", "repeated"))
    message("LoggingConfig", ("log_collector_config", 1, msg_t, "LogCollectorConfig"),
            ("sampling_config", 2, msg_t, "SamplingConfig"),
            ("custom_logging_config", 3, msg_t, ".google.protobuf.Any"))
    model_config = message("ModelConfig", ("name", 1, string, None), ("base_path", 2, string, None),
                           ("model_type", 3, enum_t, "ModelType"), ("model_platform", 4, string, None),
                           ("logging_config", 6, msg_t, "LoggingConfig"),
                           ("model_version_policy", 7, msg_t, "ServableVersionPolicy"))
    message("ModelConfigList", ("config", 1, msg_t, "ModelConfig", "repeated"))
    message("ModelServerConfig", ("model_config_list", 1, msg_t, "ModelConfigList"),
            ("custom_model_config", 2, msg_t, ".google.protobuf.Any"))
    # tensorflow_serving/apis/get_model_metadata.proto: SignatureDefMap, a map<string, SignatureDef>.
    sig_map = message("SignatureDefMap")
    parent_names = {id(model_config): f"{package}.ModelConfig", id(sig_map): f"{package}.SignatureDefMap"}
    map_field(model_config, "version_labels", 8, string, int64)
    map_field(sig_map, "signature_def", 1, string, msg_t, ".tensorflow.SignatureDef")
    # tensorflow_serving/apis/prediction_log.proto: only each log's request's model_spec.signature_name.
    message("ModelSpec", ("signature_name", 3, string, None))
    message("Request", ("model_spec", 1, msg_t, "ModelSpec"))  # Classification/Regression/PredictRequest
    message("Log", ("request", 1, msg_t, "Request"))  # ClassifyLog, RegressLog, PredictLog
    message("InferenceTask", ("model_spec", 1, msg_t, "ModelSpec"))
    message("MultiInferenceRequest", ("tasks", 1, msg_t, "InferenceTask", "repeated"))
    message("MultiInferenceLog", ("request", 1, msg_t, "MultiInferenceRequest"))
    # Field 1 is log_metadata (not read; skipped as an unknown field), so classify_log is 2.
    message("PredictionLog", ("classify_log", 2, msg_t, "Log"), ("regress_log", 3, msg_t, "Log"),
            ("multi_inference_log", 4, msg_t, "MultiInferenceLog"), ("predict_log", 6, msg_t, "Log"))

    from google.protobuf import any_pb2  # noqa: F401  registers google/protobuf/any.proto
    pool = descriptor_pool.Default()
    pool.Add(file)
    cls = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
    return SimpleNamespace(ModelServerConfig=cls("ModelServerConfig"), SignatureDefMap=cls("SignatureDefMap"),
                           PredictionLog=cls("PredictionLog"))


# ---------------------------------------------------------------------------------------------
# Finding models and versions
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Model:
    name: str
    base_path: str
    platform: str = "tensorflow"


def models_from_config(path, protos):
    """The models a TF Serving ModelServerConfig text file lists."""
    from google.protobuf import text_format

    with open(path, encoding="utf-8") as f:
        text = f.read()
    config = protos.ModelServerConfig()
    text_format.Parse(text, config)
    if not config.HasField("model_config_list") or not config.model_config_list.config:
        raise ConversionError(f"{path}: no model_config_list entries (custom_model_config is not supported)")
    return [Model(c.name, c.base_path, c.model_platform or "tensorflow") for c in config.model_config_list.config]


def version_dirs(base_path):
    """Numeric version directory names under base_path that hold a SavedModel, by version number."""
    if not os.path.isdir(base_path):
        raise ConversionError(f"base path {base_path} is not a directory")
    found = [d for d in os.listdir(base_path)
             if d.isdigit() and any(os.path.isfile(os.path.join(base_path, d, f)) for f in SAVED_MODEL_FILES)]
    return sorted(found, key=int)


# ---------------------------------------------------------------------------------------------
# Reading the SavedModel and freezing its signatures
# ---------------------------------------------------------------------------------------------

def read_meta_graph(src, tag):
    """The MetaGraphDef tagged `tag` of the SavedModel in src."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary = os.path.join(src, "saved_model.pb")
    if os.path.isfile(binary):
        with open(binary, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(src, "saved_model.pbtxt"), encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    tags = [list(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ConversionError(f"the SavedModel has no MetaGraph tagged {tag!r} (its tags: {tags})")


def serving_order(keys):
    """serving_default first, then by key: the first signature keeps a shared tensor's plain name."""
    return sorted(keys, key=lambda k: (k != "serving_default", k))


def _graph_with_batched_examples(graph_def):
    """The SavedModel's graph with unshaped serialized tf.Example placeholders made vectors."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
    parsed = {n.input[0].split(":")[0] for n in graph_def.node if n.op in PARSE_EXAMPLE_OPS}
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name in parsed and node.attr["shape"].shape.unknown_rank:
            node.attr["shape"].shape.CopyFrom(tf.TensorShape([None]).as_proto())
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")  # runs TF's shape inference from the new shapes
    return graph


def resolve_input_shapes(signatures, meta_graph, overrides):
    """Known-rank shapes for the signatures' input tensors, which ONNX inputs need.

    Returns ({TensorInfo name: TensorShape}, {signature key: reason}). Taken from --input_shape,
    else the TensorInfo, else TF's shape inference with each serialized tf.Example placeholder a
    batch vector (as Classify feeds it): TF Serving's half_plus_two `x`, an Identity of a parsed
    feature whose TensorInfo has unknown rank, comes out [-1, 1].
    """
    import tensorflow as tf

    shapes, failed, inferred = {}, {}, None
    for key, sig in signatures.items():
        for alias, info in sorted(sig.inputs.items()):
            if info.name in overrides:
                shapes[info.name] = tf.TensorShape(overrides[info.name])
            elif not info.tensor_shape.unknown_rank:
                shapes[info.name] = tf.TensorShape(info.tensor_shape)
            else:
                if inferred is None:
                    try:
                        inferred = _graph_with_batched_examples(meta_graph.graph_def)
                    except Exception:  # an unimportable graph only loses this fallback
                        inferred = tf.Graph()
                try:
                    static = inferred.get_tensor_by_name(info.name).shape
                except (KeyError, ValueError):
                    static = tf.TensorShape(None)
                if static.rank is None:
                    failed[key] = (f"input {alias} ({info.name}) has unknown rank, which an ONNX input cannot "
                                   f"have; give it with --input_shape {info.name}=-1,...")
                    break
                shapes[info.name] = static
    return shapes, failed


@dataclasses.dataclass
class Frozen:
    """The signatures' functions frozen into one GraphDef."""
    graph_def: object
    tables: dict  # hash table shared name -> (keys, values), for tf2onnx to embed
    inputs: dict  # TensorInfo name -> tensor name in graph_def
    outputs: dict  # (signature key, output alias) -> tensor name in graph_def


def freeze_signatures(loaded, signatures, shapes):
    """Freezes the signatures, called from one tf.function, into one GraphDef.

    This is the path `python -m tf2onnx.convert --saved-model` takes for one signature
    (tf_loader.from_trackable: variables to constants, lookup tables read out, functions inlined);
    one function over all signatures shares their weights, and inputs with the same TensorInfo
    name (one tensor of a TF1 graph) become one placeholder.
    """
    import tensorflow as tf
    from tf2onnx import tf_loader

    infos = {info.name: info for sig in signatures.values() for info in sig.inputs.values()}
    names = sorted(infos)
    specs = [tf.TensorSpec(shapes[n], tf.dtypes.as_dtype(infos[n].dtype), name=f"input_{i}")
             for i, n in enumerate(names)]
    order = [(key, alias) for key in signatures for alias in sorted(signatures[key].outputs)]

    @tf.function(input_signature=specs)
    def all_signatures(*args):
        fed = dict(zip(names, args))
        results = {key: loaded.signatures[key](**{a: fed[i.name] for a, i in sig.inputs.items()})
                   for key, sig in signatures.items()}
        return [results[key][alias] for key, alias in order]

    concrete = all_signatures.get_concrete_function()
    inputs = [t.name for t in concrete.inputs[:len(specs)]]  # the rest are captured variables
    outputs = [t.name for t in concrete.outputs]
    graph_def, tables = tf_loader.from_trackable(loaded, concrete, inputs, outputs, large_model=False)
    return Frozen(graph_def, tables, dict(zip(names, inputs)), dict(zip(order, outputs)))


# ---------------------------------------------------------------------------------------------
# Planning: the graph tensors and ONNX names of each signature's inputs and outputs
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TensorRef:
    """A signature input or output: a tensor of the frozen graph, its ONNX name, dtype and shape."""
    tensor: str
    name: str  # the ONNX name it asks for: its TensorInfo name, or "<key>/<feature>"
    dtype: int  # tensorflow DataType enum
    shape: object  # tensorflow TensorShapeProto
    onnx: str = ""  # the ONNX name it gets (see assign_onnx_names)


@dataclasses.dataclass
class SignaturePlan:
    key: str
    method_name: str
    inputs: dict  # alias -> TensorRef
    outputs: dict  # alias -> TensorRef
    defaults: dict = dataclasses.field(default_factory=dict)  # alias -> TensorProto
    from_features: bool = False  # rewritten from serialized tf.Examples to the parsed features


def _source(tensor):
    """The tensor an Identity chain passes on."""
    while tensor.op.type == "Identity":
        tensor = tensor.op.inputs[0]
    return tensor


def _parse_example_layout(op, sess):
    """For a ParseExample(V2) op: (index of its first dense output, dense keys, default tensors)."""
    if op.type == "ParseExampleV2":
        n_sparse, n_dense = op.get_attr("num_sparse"), len(op.get_attr("Tdense"))
        keys = [k.decode() for k in sess.run(op.inputs[3])]
        defaults = list(op.inputs[5:5 + n_dense])
    else:
        n_sparse, n_dense = op.get_attr("Nsparse"), op.get_attr("Ndense")
        keys = [sess.run(t).decode() for t in op.inputs[2 + n_sparse:2 + n_sparse + n_dense]]
        defaults = list(op.inputs[2 + n_sparse + n_dense:2 + n_sparse + 2 * n_dense])
    # Outputs are sparse indices, values and shapes (n_sparse each), then the dense values.
    return 3 * n_sparse, keys, defaults


def _tensor_proto(value):
    """A TensorProto with typed value fields (readable in text format) for a ParseExample default."""
    import numpy as np
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    value = np.asarray(value)
    proto = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in value.shape]))
    if value.dtype == np.float32:
        proto.dtype, values = types_pb2.DT_FLOAT, proto.float_val
    elif value.dtype == np.int64:
        proto.dtype, values = types_pb2.DT_INT64, proto.int64_val
    else:  # ParseExample's third dense type: bytes
        proto.dtype, values = types_pb2.DT_STRING, proto.string_val
    values.extend(value.ravel().tolist())
    return proto


def _example_features(key, serialized, outputs, graph, sess):
    """The dense tf.Example features a signature's outputs are computed from, as (inputs, defaults),
    or None when no ParseExample op parses `serialized` on the way to them."""
    import tensorflow as tf

    inputs, defaults = {}, {}
    seen, stack = set(), [graph.get_tensor_by_name(ref.tensor) for ref in outputs.values()]
    while stack:
        tensor = stack.pop()
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        op = tensor.op
        if op.type in PARSE_EXAMPLE_OPS and _source(op.inputs[0]).name == serialized.name:
            first_dense, keys, default_tensors = _parse_example_layout(op, sess)
            index = tensor.value_index - first_dense
            if not 0 <= index < len(keys):
                raise ConversionError(f"signature {key}: uses a sparse or ragged tf.Example feature, which "
                                      "tensorserve's Classify/Regress cannot fill (FixedLenFeature only)")
            feature = keys[index]
            if feature in inputs and inputs[feature].tensor != tensor.name:
                raise ConversionError(f"signature {key}: parses feature {feature} twice")
            shape = tf.TensorShape([None]).concatenate(tf.TensorShape(op.get_attr("dense_shapes")[index]))
            inputs[feature] = TensorRef(tensor.name, f"{key}/{feature}", tensor.dtype.as_datatype_enum,
                                        shape.as_proto())
            default = sess.run(default_tensors[index])
            if default.size:
                defaults[feature] = _tensor_proto(default)
            continue
        if tensor.name == serialized.name:
            raise ConversionError(f"signature {key}: uses its serialized tf.Examples other than through "
                                  "ParseExample, which tensorserve cannot feed")
        stack.extend(op.inputs)
    return (inputs, defaults) if inputs else None


def plan_signature(key, sig, frozen, shapes, graph, sess):
    """Maps one signature onto the frozen graph's tensors; raises ConversionError if it cannot be served.

    A classify/regress signature over serialized tf.Examples is rewritten to take the dense
    features it parses: ONNX has no tf.Example parser, and tensorserve fills such signatures'
    inputs from the features of the request's tf.Examples, each alias being a feature key.
    """
    from tensorflow.core.framework import types_pb2

    outputs = {alias: TensorRef(frozen.outputs[(key, alias)], info.name, info.dtype, info.tensor_shape)
               for alias, info in sig.outputs.items()}
    if sig.method_name in (CLASSIFY, REGRESS) and len(sig.inputs) == 1:
        (info,) = sig.inputs.values()
        if info.dtype == types_pb2.DT_STRING:
            serialized = graph.get_tensor_by_name(frozen.inputs[info.name])
            features = _example_features(key, serialized, outputs, graph, sess)
            if features is not None:
                return SignaturePlan(key, sig.method_name, features[0], outputs, features[1], from_features=True)
    inputs = {alias: TensorRef(frozen.inputs[info.name], info.name, info.dtype, shapes[info.name].as_proto())
              for alias, info in sig.inputs.items()}
    return SignaturePlan(key, sig.method_name, inputs, outputs)


def assign_onnx_names(plans):
    """Names each planned tensor in the ONNX graph: its TensorInfo name (a rewritten feature:
    "<key>/<feature>"), or "<key>/<TensorInfo name>" where an earlier signature's different
    tensor already has that name (TF1 signatures share tensors that are copies here)."""
    by_tensor, taken = {}, set()
    for plan in plans:
        for ref in list(plan.inputs.values()) + list(plan.outputs.values()):
            if ref.tensor in by_tensor:
                ref.onnx = by_tensor[ref.tensor]
                continue
            name = ref.name if ref.name not in taken else f"{plan.key}/{ref.name}"
            while name in taken:
                name += "_"
            taken.add(name)
            by_tensor[ref.tensor] = ref.onnx = name


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------

class _ErrorLog(logging.Handler):
    """Collects tf2onnx's error messages, its only report of ops it could not map."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def cut_at_feeds(graph_def, feeds, output_names):
    """Replaces each fed tensor with a Placeholder of its dtype and shape and prunes what only fed it.

    Feeding parsed features cuts ParseExample out of the graph; a new placeholder also carries
    the resolved shape. Returns (graph_def, placeholder tensor -> fed tensor).
    """
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2, graph_pb2

    original, graph_def = graph_def, graph_pb2.GraphDef()
    graph_def.CopyFrom(original)  # the frozen graph is cut again when signatures are dropped
    existing = {node.name for node in graph_def.node}
    spelled, placeholders = {}, {}
    for tensor, (dtype, shape) in sorted(feeds.items()):
        name = f"tensorserve_feed_{len(placeholders)}"
        while name in existing:
            name += "_"
        node = graph_def.node.add(name=name, op="Placeholder")
        node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
        node.attr["shape"].CopyFrom(attr_value_pb2.AttrValue(shape=shape))
        op_name, index = tensor.rsplit(":", 1)
        # A NodeDef input names output 0 as "op" or "op:0", any other output as "op:N".
        for spelling in ([tensor, op_name] if index == "0" else [tensor]):
            spelled[spelling] = name
        placeholders[f"{name}:0"] = tensor
    fed_ops = {t.rsplit(":", 1)[0] for t in feeds}
    new_nodes = {p.rsplit(":", 1)[0] for p in placeholders}
    for node in graph_def.node:
        if node.name in new_nodes:
            continue
        # A control dependency on a fed op would keep the ops above the feed alive.
        inputs = [spelled.get(i, i) for i in node.input if not (i.startswith("^") and i[1:] in fed_ops)]
        del node.input[:]
        node.input.extend(inputs)
    keep = [t.rsplit(":", 1)[0] for t in output_names] + sorted(new_nodes)
    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, keep), placeholders


def tf2onnx_convert(frozen, plans, opset):
    """Converts the plans' part of the frozen graph with tf2onnx, naming tensors as planned.

    Returns (onnx ModelProto, tf2onnx's error messages).
    """
    import tensorflow as tf
    from tf2onnx import optimizer, tf_loader, tfonnx

    refs = [r for p in plans for r in list(p.inputs.values()) + list(p.outputs.values())]
    onnx_name = {r.tensor: r.onnx for r in refs}
    feeds = {r.tensor: (r.dtype, r.shape) for p in plans for r in p.inputs.values()}
    outputs = sorted({r.tensor for p in plans for r in p.outputs.values()})
    errors = _ErrorLog()
    tf2onnx_log = logging.getLogger("tf2onnx")
    tf2onnx_log.addHandler(errors)
    try:
        graph_def, placeholders = cut_at_feeds(frozen.graph_def, feeds, outputs)
        rename = {p: onnx_name[t] for p, t in placeholders.items()}
        rename.update({t: onnx_name[t] for t in outputs})
        inputs = sorted(placeholders)
        with tf.Graph().as_default():
            graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(graph_def, name="")
            graph = tfonnx.process_tf_graph(tf_graph, opset=opset, input_names=inputs, output_names=outputs,
                                            initialized_tables=frozen.tables, tensors_to_rename=rename)
        model = optimizer.optimize_graph(graph).make_model("converted by tensorserve tools/tfserving_to_onnx.py")
    finally:
        tf2onnx_log.removeHandler(errors)
    return model, errors.messages


def unconverted_nodes(model):
    """Nodes tf2onnx left as TensorFlow ops: not in any ONNX operator set."""
    import onnx

    return [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]


def signatures_needing(model, nodes, plans):
    """Keys of the plans whose outputs are computed through any of the given ONNX nodes."""
    producer = {out: n for n in model.graph.node for out in n.output}
    bad = {id(n) for n in nodes}
    hit = set()
    for plan in plans:
        seen, stack = set(), [ref.onnx for ref in plan.outputs.values()]
        while stack:
            name = stack.pop()
            node = producer.get(name)
            if name in seen or node is None:
                continue
            seen.add(name)
            if id(node) in bad:
                hit.add(plan.key)
                break
            stack.extend(node.input)
    return hit


def _onnx_dtype_matches(tf_dtype, onnx_type):
    """Whether a TF DataType enum and an ONNX TensorProto element type name the same element."""
    import numpy as np
    import onnx
    import tensorflow as tf

    if tf_dtype == tf.string.as_datatype_enum:
        return onnx_type == onnx.TensorProto.STRING
    try:
        return np.dtype(tf.dtypes.as_dtype(tf_dtype).as_numpy_dtype) == onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    except (TypeError, KeyError):
        return False


def complete_output_shapes(model):
    """Gives graph outputs tf2onnx left without a shape ONNX's inferred one (the checker needs one)."""
    import onnx

    missing = [v for v in model.graph.output if not v.type.tensor_type.HasField("shape")]
    if not missing:
        return
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.output}
    for value in missing:
        if value.name in inferred and inferred[value.name].type.tensor_type.HasField("shape"):
            value.type.CopyFrom(inferred[value.name].type)


def fold_computed_reshapes(model):
    """Replaces a Reshape's computed target shape (Keras' Flatten becomes Shape -> Gather -> Slice
    -> Concat -> Reshape) by a constant where ONNX's shape inference knows every dimension but
    one, then drops the shape arithmetic left unused: tract cannot plan the computed form, and
    the constant means the same ([N, 1352] with N unknown becomes [-1, 1352])."""
    import numpy as np
    import onnx

    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: v.type.tensor_type.shape for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    folded = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] in constants:
            continue
        shape = shapes.get(node.output[0])
        if shape is None:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]
        # Exactly one unknown dimension, and no 0 (which Reshape reads as "copy the input's").
        if len(dims) == 0 or dims.count(-1) != 1 or 0 in dims:
            continue
        name = f"{node.output[0]}/folded_shape"
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(dims, np.int64), name))
        node.input[1] = name
        folded += 1
    if folded:
        _drop_unused_nodes(model)
    return folded


def _drop_unused_nodes(model):
    """Removes nodes whose outputs nothing reads, repeatedly, and the initializers left unread."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def check_model(model, plans):
    """Validates the ONNX model and that every planned tensor is a graph input/output of its dtype."""
    import onnx
    import onnxruntime

    complete_output_shapes(model)
    onnx.checker.check_model(model)
    # onnxruntime is what tensorserve runs, so a model it refuses is a failed conversion.
    onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    graph_io = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for plan in plans:
        for alias, ref in list(plan.inputs.items()) + list(plan.outputs.items()):
            value = graph_io.get(ref.onnx)
            if value is None:
                raise ConversionError(f"signature {plan.key}: {ref.onnx} ({alias}) is not an ONNX graph "
                                      f"input or output; the graph has {sorted(graph_io)}")
            if not _onnx_dtype_matches(ref.dtype, value.type.tensor_type.elem_type):
                raise ConversionError(f"signature {plan.key}: {alias} has another dtype in the ONNX graph")


def fill_output_shapes(model, plans):
    """Declares the ONNX graph's shape for outputs whose TensorInfo has unknown rank."""
    from tensorflow.core.framework import tensor_shape_pb2

    shapes = {}
    for value in model.graph.output:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = tensor_shape_pb2.TensorShapeProto(dim=[
                tensor_shape_pb2.TensorShapeProto.Dim(size=d.dim_value if d.HasField("dim_value") else -1)
                for d in tensor_type.shape.dim])
    for plan in plans:
        for ref in plan.outputs.values():
            if ref.shape.unknown_rank and ref.onnx in shapes:
                ref.shape = shapes[ref.onnx]


def signature_def_map(plans, protos):
    """tensorserve's signatures.pbtxt content for the converted signatures."""
    from tensorflow.core.protobuf import meta_graph_pb2

    out = protos.SignatureDefMap()
    for plan in plans:
        sig = meta_graph_pb2.SignatureDef(method_name=plan.method_name)
        for target, refs in ((sig.inputs, plan.inputs), (sig.outputs, plan.outputs)):
            for alias, ref in refs.items():
                target[alias].CopyFrom(meta_graph_pb2.TensorInfo(name=ref.onnx, dtype=ref.dtype,
                                                                 tensor_shape=ref.shape))
        for alias, proto in plan.defaults.items():
            sig.defaults[alias].CopyFrom(proto)
        out.signature_def[plan.key].CopyFrom(sig)
    return out


def warmup_signatures(path, protos):
    """(kind, signature name) of each record of a TF Serving warmup file."""
    import tensorflow as tf

    found = []
    for record in tf.compat.v1.io.tf_record_iterator(path):
        entry = protos.PredictionLog.FromString(record)
        for kind in ("classify_log", "regress_log", "predict_log"):
            if entry.HasField(kind):
                found.append((kind, getattr(entry, kind).request.model_spec.signature_name or "serving_default"))
        if entry.HasField("multi_inference_log"):
            for task in entry.multi_inference_log.request.tasks:
                found.append(("multi_inference_log", task.model_spec.signature_name or "serving_default"))
    return found


def warmup_problems(path, plans, protos):
    """Why tensorserve would fail replaying this warmup file against the converted signatures."""
    served = {p.key: p for p in plans}
    try:
        logged = warmup_signatures(path, protos)
    except Exception as e:  # a corrupt record: DecodeError, DataLossError...
        return [_first_line("cannot read the warmup file (tensorserve would fail this version's load too): ", e)]
    for kind, name in logged:
        plan = served.get(name)
        if plan is None:
            return [f"warmup {kind} names signature {name}, which was not converted; tensorserve "
                    "would fail this version's load"]
        if plan.from_features and kind == "predict_log":
            return [f"warmup predict_log feeds serialized tf.Examples to {name}, which now takes "
                    "features; tensorserve would fail this version's load"]
    return []


@dataclasses.dataclass
class VersionResult:
    label: str
    converted: list = dataclasses.field(default_factory=list)  # SignaturePlan
    failed: dict = dataclasses.field(default_factory=dict)  # signature key -> reason
    error: str = ""  # why the version as a whole failed
    notes: list = dataclasses.field(default_factory=list)  # warnings: something may not work as before
    changes: list = dataclasses.field(default_factory=list)  # rewrites that keep the meaning
    written: str = ""


def _first_line(prefix, error):
    text = str(error).strip().splitlines()
    return f"{prefix}{type(error).__name__}: {text[0] if text else ''}"


def _freeze_what_freezes(loaded, signatures, shapes, result):
    """Freezes all signatures at once or, if that fails, those that freeze on their own."""
    try:
        return freeze_signatures(loaded, signatures, shapes), list(signatures)
    except Exception as e:  # tracing or freezing errors of any type
        if len(signatures) == 1:
            result.failed.update({k: _first_line("cannot freeze: ", e) for k in signatures})
            return None, []
    good = {}
    for key, sig in signatures.items():
        try:
            freeze_signatures(loaded, {key: sig}, shapes)
            good[key] = sig
        except Exception as e:  # as above
            result.failed[key] = _first_line("cannot freeze: ", e)
    if not good:
        return None, []
    return freeze_signatures(loaded, good, shapes), list(good)


def convert_version(src, dst, label, args, protos):
    """Converts the SavedModel in src, writing model.onnx and signatures.pbtxt into dst."""
    import tensorflow as tf
    from google.protobuf import text_format

    result = VersionResult(label)
    try:
        meta_graph = read_meta_graph(src, args.tag)
    except (OSError, ConversionError, text_format.ParseError) as e:
        result.error = str(e)
        return result
    except Exception as e:  # a corrupt saved_model.pb
        result.error = _first_line("cannot read the SavedModel: ", e)
        return result
    signatures = {}
    for key in serving_order(meta_graph.signature_def):
        sig = meta_graph.signature_def[key]
        if key.startswith("__"):  # __saved_model_init_op and the like are not servable
            continue
        if any(not i.name for i in list(sig.inputs.values()) + list(sig.outputs.values())):
            result.failed[key] = "a composite (sparse or ragged) TensorInfo, which tensorserve does not serve"
        elif not sig.inputs or not sig.outputs:
            result.failed[key] = "no inputs or no outputs"
        else:
            signatures[key] = sig
    if not signatures and not result.failed:
        result.error = f"the SavedModel has no signature_def for tag {args.tag}"
        return result
    shapes, unshaped = resolve_input_shapes(signatures, meta_graph, args.input_shape)
    result.failed.update(unshaped)
    signatures = {k: s for k, s in signatures.items() if k not in unshaped}

    plans, model = [], None
    if signatures:
        try:
            loaded = tf.saved_model.load(src, tags=[args.tag])
        except Exception as e:  # TF raises many types here
            result.error = _first_line("cannot load the SavedModel: ", e)
            return result
        frozen, keys = _freeze_what_freezes(loaded, signatures, shapes, result)
        if frozen is not None:
            graph = tf.Graph()
            with graph.as_default():
                tf.import_graph_def(frozen.graph_def, name="")
            with tf.compat.v1.Session(graph=graph) as sess:
                for key in keys:
                    try:
                        plans.append(plan_signature(key, signatures[key], frozen, shapes, graph, sess))
                    except ConversionError as e:
                        result.failed[key] = str(e)
            assign_onnx_names(plans)

        # All signatures go into one graph; those needing an op tf2onnx left unmapped are
        # dropped and the rest converted again, so one bad head does not sink the others.
        while plans:
            try:
                model, errors = tf2onnx_convert(frozen, plans, args.opset)
            except Exception as e:  # tf2onnx raises whatever its op handlers raise
                result.failed.update({p.key: _first_line("tf2onnx: ", e) for p in plans})
                plans, model = [], None
                break
            left = unconverted_nodes(model)
            if not left:
                break
            ops = sorted({n.op_type for n in left})
            reason = f"tf2onnx cannot convert TensorFlow op(s) {', '.join(ops)}"
            if any(op in PARSE_EXAMPLE_OPS for op in ops):
                reason += (" (ONNX has no tf.Example parser: only classify/regress signatures are "
                           "rewritten to take the parsed features)")
            elif errors:
                reason += f" ({errors[-1]})"
            blocked = signatures_needing(model, left, plans) or {p.key for p in plans}
            result.failed.update({k: reason for k in blocked})
            plans, model = [p for p in plans if p.key not in blocked], None
            assign_onnx_names(plans)

    if model is None:
        result.error = "no signature could be converted"
        return result
    folded = fold_computed_reshapes(model)
    if folded:
        result.changes.append(f"{folded} computed Reshape shape(s) made constant (tract cannot plan them)")
    try:
        check_model(model, plans)
    except Exception as e:  # onnx / onnxruntime validation errors
        result.error = _first_line("the converted model does not validate: ", e)
        return result
    fill_output_shapes(model, plans)
    result.converted = plans
    if result.failed and not args.allow_partial:
        result.error = (f"{len(result.failed)} signature(s) failed, so nothing was written "
                        f"(--allow_partial writes the other {len(plans)})")
        return result

    warmup_src = os.path.join(src, WARMUP_FILE)
    if os.path.isfile(warmup_src):
        result.notes.extend(warmup_problems(warmup_src, plans, protos))
    write_version(dst, model, signature_def_map(plans, protos), warmup_src, src, text_format)
    result.written = dst
    return result


def write_version(dst, model, sig_map, warmup_src, src, text_format):
    """Writes a version's files so that tensorserve never sees a half-written version."""
    header = (f"# tensorflow.serving.SignatureDefMap (protobuf text format) for {MODEL_FILE}, generated by\n"
              "# tools/tfserving_to_onnx.py from the SavedModel's signature_def map. TensorInfo names are "
              "ONNX tensors.\n")
    in_place = os.path.abspath(dst) == os.path.abspath(src)
    # A copy is built beside its final place and renamed in, as README's deploy advice says.
    work = dst if in_place else tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(dst)}-",
                                                 dir=os.path.dirname(os.path.abspath(dst)))
    umask = os.umask(0)
    os.umask(umask)
    try:
        if not in_place:
            os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it 0700
        with open(os.path.join(work, SIGNATURES_FILE), "w", encoding="utf-8") as f:
            f.write(header + text_format.MessageToString(sig_map))
        if not in_place and os.path.isfile(warmup_src):
            os.makedirs(os.path.join(work, os.path.dirname(WARMUP_FILE)), exist_ok=True)
            shutil.copyfile(warmup_src, os.path.join(work, WARMUP_FILE))
        # model.onnx last and by rename: tensorserve loads a version once model.onnx is there.
        with tempfile.NamedTemporaryFile(dir=work, prefix=".model-", suffix=".onnx", delete=False) as f:
            f.write(model.SerializeToString())
        os.chmod(f.name, 0o666 & ~umask)  # NamedTemporaryFile makes it 0600
        os.replace(f.name, os.path.join(work, MODEL_FILE))
        if not in_place:
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.rename(work, dst)
    except BaseException:
        if not in_place:
            shutil.rmtree(work, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def describe(plan):
    if plan.from_features:
        return f"{plan.key} [from tf.Example features {', '.join(sorted(plan.inputs))}]"
    return plan.key


def print_result(result):
    if result.written:
        print(f"{result.label}: {'PARTIAL' if result.failed else 'OK'} -> {result.written}")
    else:
        print(f"{result.label}: FAILED" + (f": {result.error}" if result.error else ""))
    for plan in result.converted:
        print(f"    {'converted ' if result.written else 'convertible'} {describe(plan)}")
    for key, reason in sorted(result.failed.items()):
        print(f"    failed     {key}: {reason}")
    for change in result.changes:
        print(f"    rewrote    {change}")
    for note in result.notes:
        print(f"    warning    {note}")
    sys.stdout.flush()


def _input_shape(text):
    """Parses --input_shape TENSOR=DIMS into (tensor, [dims or None])."""
    tensor, sep, dims = text.rpartition("=")
    try:
        shape = [None if int(d) < 0 else int(d) for d in dims.split(",")] if dims.strip() else []
    except ValueError:
        sep = ""
    if not sep or ":" not in tensor:
        raise argparse.ArgumentTypeError(f"{text!r} is not TENSOR=DIMS, e.g. x:0=-1,1")
    return tensor, shape


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Convert TF Serving SavedModel versions to tensorserve's model.onnx + signatures.pbtxt.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--base_path", help="a model's base path: BASE/<version>/saved_model.pb")
    source.add_argument("--model_config_file", help="TF Serving's text-format ModelServerConfig")
    parser.add_argument("--output_base",
                        help="write <output_base>/<version>/ (with --base_path) or <output_base>/<model name>/"
                             "<version>/ (with --model_config_file) instead of beside each saved_model.pb")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset to convert to (default 17)")
    parser.add_argument("--tag", default="serve", help="SavedModel MetaGraph tag (default serve)")
    parser.add_argument("--input_shape", action="append", default=[], type=_input_shape, metavar="TENSOR=DIMS",
                        help="shape of a signature input tensor, e.g. x:0=-1,1 (-1: any size); repeatable; "
                             "needed where neither the signature nor TensorFlow knows the input's rank")
    parser.add_argument("--keep_going", action="store_true", help="go on to the next version after a failure")
    parser.add_argument("--allow_partial", action="store_true",
                        help="write a version even if some of its signatures failed (they are left out)")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's and tf2onnx's logs")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.input_shape = dict(args.input_shape)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # its errors are collected and reported

    import tensorflow as tf  # imported here so that --help does not wait for TensorFlow

    if not args.verbose:
        tf.get_logger().setLevel(logging.ERROR)
    protos = _message_classes()

    try:
        if args.base_path:
            jobs = [(Model(os.path.basename(os.path.normpath(args.base_path)), args.base_path), args.output_base)]
        else:
            models = models_from_config(args.model_config_file, protos)
            jobs = [(m, args.output_base and os.path.join(args.output_base, m.name)) for m in models]
    except (OSError, ConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # text_format.ParseError and friends
        print(f"error: {args.model_config_file}: {e}", file=sys.stderr)
        return 2

    failures = 0
    for model, out_base in jobs:
        if model.platform not in ("tensorflow", ""):
            print(f"{model.name}: skipped (model_platform {model.platform})")
            continue
        try:
            versions = version_dirs(model.base_path)
        except ConversionError as e:
            print(f"{model.name}: FAILED: {e}")
            failures += 1
            if not args.keep_going:
                break
            continue
        if not versions:
            print(f"{model.name}: FAILED: no numeric version directory with a SavedModel under {model.base_path}")
            failures += 1
            if not args.keep_going:
                break
        for version in versions:
            src = os.path.join(model.base_path, version)
            dst = os.path.join(out_base, version) if out_base else src
            if out_base:
                os.makedirs(out_base, exist_ok=True)
            result = convert_version(src, dst, f"{model.name}/{version}", args, protos)
            print_result(result)
            if not result.written:
                failures += 1
                if not args.keep_going:
                    break
        if failures and not args.keep_going:
            break
    print(f"{failures} version(s) failed" if failures else "all versions converted")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
