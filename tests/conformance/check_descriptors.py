"""Descriptor identity: our proto/ schemas against the official TF Serving and KServe V2 descriptors.

The official FileDescriptorProtos are the serialized ones embedded in the `_pb2` modules of
the PyPI packages `tensorflow-serving-api`, `tensorflow` and `tritonclient` (V2's `inference`
package, Triton's superset). Every message (nested ones and
map entries too), field, oneof, enum, enum value, service and method that WE define is
compared by fully qualified name: field name, number, type, label, referenced type,
proto3 `optional`, oneof membership, json_name, field options (packed, jstype, lazy,
deprecated), map_entry, reserved ranges/names, and the syntax of the defining file. Official
fields, enum values and methods missing from a type we define are differences too, as is
anything of ours that has no official counterpart. Whole types we do not define are fine
(that is the trimming), and so are the service methods listed in TRIMMED_METHODS. The only
tolerated field deviations are listed in ALLOWED_DIFFERENCES.

Usage:  python check_descriptors.py OURS.pb      (exit 0: identical, 1: differences)
  OURS.pb is a serialized google.protobuf.FileDescriptorSet of proto/, e.g. from protox, or
  python -m grpc_tools.protoc -I proto --include_imports --descriptor_set_out=OURS.pb <files>
As a pytest module: test_descriptors_match() reads the path from $TENSORSERVE_FDS.
"""
import importlib
import os
import sys

from google.protobuf import descriptor_pb2

# Official modules; their transitive imports cover every type we carry.
OFFICIAL_MODULES = [
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.protobuf.error_codes_pb2",  # re-exports tensorflow.error.Code from xla/tsl
    "tritonclient.grpc.service_pb2",  # KServe V2 / Triton's GRPCInferenceService (package inference)
]

# Official methods we leave out on purpose, by service: features tensorserve does not have (a
# call to one is answered UNIMPLEMENTED). Any other missing method is a difference.
TRIMMED_METHODS = {
    ".inference.GRPCInferenceService": {
        "ModelConfig",  # needs Triton's model_config.proto (57 messages) for a config we do not have
        "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
        "TraceSetting", "LogSettings",
    },
}

F = descriptor_pb2.FieldDescriptorProto

# The only tolerated deviations: message-typed fields we declare as `bytes`. Both use wire
# type 2 (length-delimited) with the same number, so encoded bytes are identical; the server
# never looks inside them. Everything else about such a field must still match.
ALLOWED_DIFFERENCES = {
    ".tensorflow.TensorInfo.composite_tensor":
        "TensorInfo.CompositeTensor needs struct.proto's TypeSpecProto and its imports",
    ".tensorflow.serving.SessionRunLog.request":
        "SessionRunRequest needs TensorFlow's config.proto (RunOptions) and ~15 more files",
    ".tensorflow.serving.SessionRunLog.response":
        "SessionRunResponse needs TensorFlow's config.proto (RunMetadata) and ~15 more files",
}

# Packages of tensorserve's own files, which have no official counterpart.
OWN_PACKAGES = {"tensorserve"}

# Types that must be in our set, so that a truncated descriptor set cannot pass.
REQUIRED = [
    ".tensorflow.DataType", ".tensorflow.TensorProto", ".tensorflow.TensorShapeProto",
    ".tensorflow.ResourceHandleProto", ".tensorflow.Example", ".tensorflow.TensorInfo",
    ".tensorflow.SignatureDef", ".tensorflow.error.Code", ".tensorflow.serving.ModelSpec",
    ".tensorflow.serving.PredictRequest", ".tensorflow.serving.PredictResponse",
    ".tensorflow.serving.ClassificationRequest", ".tensorflow.serving.RegressionRequest",
    ".tensorflow.serving.MultiInferenceRequest", ".tensorflow.serving.GetModelMetadataResponse",
    ".tensorflow.serving.GetModelStatusResponse", ".tensorflow.serving.ReloadConfigRequest",
    ".tensorflow.serving.ModelServerConfig", ".tensorflow.serving.PredictionLog",
    ".tensorflow.serving.PredictionService", ".tensorflow.serving.ModelService",
    ".tensorflow.serving.BatchingParameters", ".tensorflow.serving.MonitoringConfig",
    ".inference.GRPCInferenceService", ".inference.ModelInferRequest", ".inference.ModelInferResponse",
    ".inference.InferParameter", ".inference.InferTensorContents", ".inference.ModelStatistics",
]


# TF Serving's servables/tensorflow/session_bundle_config.proto ships in no PyPI wheel; its
# BatchingParameters is checked against this table of the upstream file instead
# (name, number, type, referenced type), written from TF Serving's source.
UPSTREAM_TABLES = {
    "tensorflow_serving/servables/tensorflow/session_bundle_config.proto": ("tensorflow.serving", {
        "BatchingParameters": [
            ("max_batch_size", 1, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            ("batch_timeout_micros", 2, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            ("max_enqueued_batches", 3, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            ("num_batch_threads", 4, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            ("thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            ("allowed_batch_sizes", 6, F.TYPE_INT64, None),
            ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None),
            ("enable_large_batch_splitting", 8, F.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
            ("max_execution_batch_size", 9, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        ],
    }),
    # config/monitoring_config.proto is not in the tensorflow-serving-api wheel either.
    "tensorflow_serving/config/monitoring_config.proto": ("tensorflow.serving", {
        "PrometheusConfig": [
            ("enable", 1, F.TYPE_BOOL, None),
            ("path", 2, F.TYPE_STRING, None),
        ],
        "MonitoringConfig": [
            ("prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig"),
        ],
    }),
    # config/ssl_config.proto, --ssl_config_file's schema, is not in the wheel either.
    "tensorflow_serving/config/ssl_config.proto": ("tensorflow.serving", {
        "SSLConfig": [
            ("server_key", 1, F.TYPE_STRING, None),
            ("server_cert", 2, F.TYPE_STRING, None),
            ("custom_ca", 3, F.TYPE_STRING, None),
            ("client_verify", 4, F.TYPE_BOOL, None),
        ],
    }),
}


def upstream_table_files():
    """FileDescriptorProtos built from UPSTREAM_TABLES (proto3, repeated for allowed_batch_sizes)."""
    out = []
    for name, (package, messages) in UPSTREAM_TABLES.items():
        fd = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
        for msg, fields in messages.items():
            m = fd.message_type.add(name=msg)
            for fname, number, ftype, type_name in fields:
                repeated = fname == "allowed_batch_sizes"
                f = m.field.add(name=fname, number=number, type=ftype, json_name=default_json_name(fname),
                                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
                if type_name:
                    f.type_name = type_name
        out.append(fd)
    return out


def official_files():
    """Official FileDescriptorProtos by file name, decoded from each module's serialized_pb."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    files = {}

    def add(fd):
        if fd.name in files:
            return
        files[fd.name] = descriptor_pb2.FileDescriptorProto.FromString(fd.serialized_pb)
        for dep in fd.dependencies:
            add(dep)

    for name in OFFICIAL_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # never pass vacuously
            raise RuntimeError(f"cannot import official module {name} "
                               f"(pip install tensorflow-serving-api): {e!r}") from e
        add(module.DESCRIPTOR)
    return list(files.values()) + upstream_table_files()


def index_files(files):
    """Fully qualified name -> (kind, descriptor proto, defining file)."""
    index = {}

    def put(full, kind, d, fd):
        if full in index:
            raise RuntimeError(f"{full} defined twice ({index[full][2].name}, {fd.name})")
        index[full] = (kind, d, fd)

    def walk_msg(prefix, m, fd):
        full = f"{prefix}.{m.name}"
        put(full, "message", m, fd)
        for n in m.nested_type:
            walk_msg(full, n, fd)
        for e in m.enum_type:
            put(f"{full}.{e.name}", "enum", e, fd)

    for fd in files:
        prefix = "." + fd.package if fd.package else ""
        for m in fd.message_type:
            walk_msg(prefix, m, fd)
        for e in fd.enum_type:
            put(f"{prefix}.{e.name}", "enum", e, fd)
        for s in fd.service:
            put(f"{prefix}.{s.name}", "service", s, fd)
    return index


def load_ours(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    # Well-known types (google/protobuf/*) come with the compiler; package `tensorserve` is
    # our own schema with no upstream to match.
    ours = [f for f in fds.file
            if not f.name.startswith("google/protobuf/") and f.package not in OWN_PACKAGES]
    if not ours:
        raise RuntimeError(f"{path} holds no tensorserve schemas")
    return ours


def default_json_name(name):
    """protoc's ToJsonName: drop '_' and upper-case the letter after it."""
    out, upper = [], False
    for c in name:
        if c == "_":
            upper = True
        else:
            out.append(c.upper() if upper else c)
            upper = False
    return "".join(out)


def json_name(f):
    return f.json_name if f.HasField("json_name") else default_json_name(f.name)


def oneof_name(msg, f):
    return msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None


def opts(o):
    return o.SerializeToString(deterministic=True)


def type_str(f):
    return F.Type.Name(f.type) + (" " + f.type_name if f.type_name else "")


class Counts:
    def __init__(self):
        self.messages = self.fields = self.enums = self.enum_values = self.services = self.methods = 0

    def __str__(self):
        return (f"{self.messages} messages, {self.fields} fields, {self.enums} enums with "
                f"{self.enum_values} enum values, {self.services} services with {self.methods} methods")


def compare_message(full, ours, off, diffs, counts, used_allowances):
    counts.messages += 1
    if ours.options.map_entry != off.options.map_entry:
        diffs.append(f"{full}: map_entry {ours.options.map_entry} vs official {off.options.map_entry}")
    if opts(ours.options) != opts(off.options):
        diffs.append(f"{full}: message options {ours.options} vs official {off.options}")
    off_fields = {f.name: f for f in off.field}
    off_by_number = {f.number: f for f in off.field}
    for f in ours.field:
        counts.fields += 1
        name = f"{full}.{f.name}"
        o = off_fields.get(f.name)
        if o is None:
            other = off_by_number.get(f.number)
            hint = f" (official field {f.number} is {other.name!r})" if other else ""
            diffs.append(f"{name} = {f.number}: field not in the official message{hint}")
            continue
        checks = [
            ("number", f.number, o.number),
            ("label", F.Label.Name(f.label), F.Label.Name(o.label)),
            ("proto3_optional", f.proto3_optional, o.proto3_optional),
            ("oneof", oneof_name(ours, f), oneof_name(off, o)),
            ("json_name", json_name(f), json_name(o)),
            ("options", str(f.options).strip(), str(o.options).strip()),
            ("extendee", f.extendee, o.extendee),
            ("default_value", f.default_value, o.default_value),
        ]
        allowed = (name in ALLOWED_DIFFERENCES and f.type == F.TYPE_BYTES
                   and o.type == F.TYPE_MESSAGE and f.label == o.label)
        if allowed:
            used_allowances.add(name)
        else:
            checks.append(("type", type_str(f), type_str(o)))
        for what, a, b in checks:
            if a != b:
                diffs.append(f"{name}: {what} is {a!r}, official {b!r}")
    for o in off.field:
        if o.name not in {f.name for f in ours.field}:
            diffs.append(f"{full}.{o.name} = {o.number}: official field missing from ours")
    # Oneofs: same names with the same members (membership is also checked per field above).
    ours_oneofs = {d.name: sorted(f.name for f in ours.field if oneof_name(ours, f) == d.name)
                   for d in ours.oneof_decl}
    off_oneofs = {d.name: sorted(f.name for f in off.field if oneof_name(off, f) == d.name)
                  for d in off.oneof_decl}
    if ours_oneofs != off_oneofs:
        diffs.append(f"{full}: oneofs {ours_oneofs} vs official {off_oneofs}")
    ours_res = sorted((r.start, r.end) for r in ours.reserved_range)
    off_res = sorted((r.start, r.end) for r in off.reserved_range)
    if ours_res != off_res:
        diffs.append(f"{full}: reserved ranges {ours_res} vs official {off_res}")
    if sorted(ours.reserved_name) != sorted(off.reserved_name):
        diffs.append(f"{full}: reserved names {list(ours.reserved_name)} vs official {list(off.reserved_name)}")
    if ours.extension or ours.extension_range:
        diffs.append(f"{full}: extensions are not expected")


def compare_enum(full, ours, off, diffs, counts):
    counts.enums += 1
    if opts(ours.options) != opts(off.options):
        diffs.append(f"{full}: enum options {ours.options} vs official {off.options}")
    off_values = {v.name: v.number for v in off.value}
    for v in ours.value:
        counts.enum_values += 1
        if v.name not in off_values:
            diffs.append(f"{full}.{v.name} = {v.number}: value not in the official enum")
        elif off_values[v.name] != v.number:
            diffs.append(f"{full}.{v.name} = {v.number}: official number {off_values[v.name]}")
    for v in off.value:
        if v.name not in {x.name for x in ours.value}:
            diffs.append(f"{full}.{v.name} = {v.number}: official value missing from ours")
    if list(ours.reserved_name) != list(off.reserved_name) or \
            [(r.start, r.end) for r in ours.reserved_range] != [(r.start, r.end) for r in off.reserved_range]:
        diffs.append(f"{full}: enum reserved ranges/names differ")


def compare_service(full, ours, off, diffs, counts):
    counts.services += 1
    off_methods = {m.name: m for m in off.method}
    for m in ours.method:
        counts.methods += 1
        o = off_methods.get(m.name)
        if o is None:
            diffs.append(f"{full}/{m.name}: method not in the official service")
            continue
        for what in ("input_type", "output_type", "client_streaming", "server_streaming"):
            if getattr(m, what) != getattr(o, what):
                diffs.append(f"{full}/{m.name}: {what} {getattr(m, what)!r}, official {getattr(o, what)!r}")
    for name in off_methods:
        if name not in {m.name for m in ours.method} and name not in TRIMMED_METHODS.get(full, ()):
            diffs.append(f"{full}/{name}: official method missing from ours")


def compare(ours_files, official_files_):
    ours = index_files(ours_files)
    official = index_files(official_files_)
    diffs, counts, used = [], Counts(), set()
    for full, (kind, d, fd) in sorted(ours.items()):
        if full not in official:
            diffs.append(f"{full}: {kind} (in {fd.name}) not in the official schemas")
            continue
        off_kind, off_d, off_fd = official[full]
        if off_kind != kind:
            diffs.append(f"{full}: ours is a {kind}, official is a {off_kind}")
            continue
        if (fd.syntax or "proto2") != (off_fd.syntax or "proto2"):
            diffs.append(f"{full}: file syntax {fd.syntax!r}, official {off_fd.syntax!r}")
        if kind == "message":
            compare_message(full, d, off_d, diffs, counts, used)
        elif kind == "enum":
            compare_enum(full, d, off_d, diffs, counts)
        else:
            compare_service(full, d, off_d, diffs, counts)
    for fd in ours_files:
        if fd.extension:
            diffs.append(f"{fd.name}: top-level extensions are not expected")
    for r in REQUIRED:
        if r not in ours:
            diffs.append(f"{r}: missing from our schemas")
    unused = sorted(set(ALLOWED_DIFFERENCES) - used)
    return diffs, counts, unused


def check(path):
    """Returns (differences, summary) for the FileDescriptorSet at path."""
    diffs, counts, unused = compare(load_ours(path), official_files())
    for name in unused:
        print(f"note: allowed difference not needed any more: {name}")
    return diffs, str(counts)


def test_descriptors_match():
    path = os.environ.get("TENSORSERVE_FDS")
    assert path, "set TENSORSERVE_FDS to a serialized FileDescriptorSet of proto/"
    diffs, summary = check(path)
    print(f"checked {summary}: {len(diffs)} differences")
    assert not diffs, "\n".join(diffs)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    diffs, summary = check(argv[1])
    for d in diffs:
        print("DIFF", d)
    print("allowed differences:")
    for name, reason in ALLOWED_DIFFERENCES.items():
        print(f"  {name}: declared bytes, official message; {reason}")
    print(f"checked {summary}: {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
