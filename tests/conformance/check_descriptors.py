"""Descriptor identity: our proto/ schemas against the official TensorFlow Serving descriptors.

The official FileDescriptorProtos come from the `_pb2` modules of the PyPI packages
`tensorflow-serving-api` and `tensorflow`. For every message (nested ones too), field,
oneof, map, enum value, service and method that we define, the fully qualified name,
number, type, label, referenced type, proto3-optional flag, oneof membership, packed and
json_name options must match. Anything of ours missing upstream is a difference too.

Usage: python check_descriptors.py OURS.pb   (OURS.pb: a serialized FileDescriptorSet,
written by `target/release/examples/dump_descriptors`). Also a pytest test reading the
path from $TENSORSERVE_FDS.
"""
import importlib
import os
import sys

from google.protobuf import descriptor_pb2

# Official modules whose descriptors define everything we carry (imports are followed).
OFFICIAL_MODULES = [
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
]

# The only tolerated differences, each a message-typed field we declare as `bytes`
# (same wire type 2, so the bytes on the wire are identical) to avoid importing huge schemas.
ALLOWED_BYTES_FOR_MESSAGE = {
    ".tensorflow.TensorInfo.composite_tensor": "TensorInfo.CompositeTensor pulls in struct.proto's type specs",
    ".tensorflow.serving.SessionRunLog.request": "SessionRunRequest pulls in TensorFlow's config.proto",
    ".tensorflow.serving.SessionRunLog.response": "SessionRunResponse pulls in TensorFlow's config.proto",
}

F = descriptor_pb2.FieldDescriptorProto


def official_index():
    """Fully qualified name -> descriptor proto, for every message/enum/service upstream."""
    files = {}

    def add(fd):
        if fd.name in files:
            return
        p = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(p)
        files[fd.name] = p
        for dep in fd.dependencies:
            add(dep)

    for name in OFFICIAL_MODULES:
        module = importlib.import_module(name)  # ImportError fails the check: never pass vacuously
        add(module.DESCRIPTOR)
    return index_files(files.values())


def index_files(files):
    index = {}

    def walk_msg(prefix, m):
        full = f"{prefix}.{m.name}"
        index[full] = ("message", m)
        for n in m.nested_type:
            walk_msg(full, n)
        for e in m.enum_type:
            index[f"{full}.{e.name}"] = ("enum", e)

    for fd in files:
        prefix = "." + fd.package if fd.package else ""
        for m in fd.message_type:
            walk_msg(prefix, m)
        for e in fd.enum_type:
            index[f"{prefix}.{e.name}"] = ("enum", e)
        for s in fd.service:
            index[f"{prefix}.{s.name}"] = ("service", s)
    return index


def our_index(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    ours = [f for f in fds.file if not f.name.startswith("google/protobuf/")]
    if not ours:
        raise SystemExit(f"{path} holds no tensorserve schemas")
    return index_files(ours)


def default_json_name(name):
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def compare(ours, official):
    diffs = []
    counts = {"messages": 0, "fields": 0, "enum values": 0, "services": 0, "methods": 0}
    for full, (kind, ours_d) in sorted(ours.items()):
        if full not in official:
            diffs.append(f"{full}: {kind} not in the official schemas")
            continue
        off_kind, off_d = official[full]
        if off_kind != kind:
            diffs.append(f"{full}: ours is a {kind}, official is a {off_kind}")
            continue
        if kind == "message":
            counts["messages"] += 1
            if ours_d.options.map_entry != off_d.options.map_entry:
                diffs.append(f"{full}: map_entry differs")
            off_fields = {f.name: f for f in off_d.field}
            for f in ours_d.field:
                counts["fields"] += 1
                name = f"{full}.{f.name}"
                o = off_fields.get(f.name)
                if o is None:
                    diffs.append(f"{name}: field not in the official message")
                    continue
                checks = [("number", f.number, o.number), ("label", f.label, o.label),
                          ("proto3_optional", f.proto3_optional, o.proto3_optional)]
                if name in ALLOWED_BYTES_FOR_MESSAGE and f.type == F.TYPE_BYTES and o.type == F.TYPE_MESSAGE:
                    pass
                else:
                    checks += [("type", f.type, o.type), ("type_name", f.type_name, o.type_name)]
                ours_oneof = ours_d.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
                off_oneof = off_d.oneof_decl[o.oneof_index].name if o.HasField("oneof_index") else None
                checks.append(("oneof", ours_oneof, off_oneof))
                checks.append(("packed", f.options.packed if f.options.HasField("packed") else None,
                               o.options.packed if o.options.HasField("packed") else None))
                ours_json = f.json_name if f.HasField("json_name") else default_json_name(f.name)
                off_json = o.json_name if o.HasField("json_name") else default_json_name(o.name)
                checks.append(("json_name", ours_json, off_json))
                for what, a, b in checks:
                    if a != b:
                        diffs.append(f"{name}: {what} is {a!r}, official {b!r}")
            ours_res = sorted((r.start, r.end) for r in ours_d.reserved_range)
            off_res = sorted((r.start, r.end) for r in off_d.reserved_range)
            if ours_res and ours_res != off_res:
                diffs.append(f"{full}: reserved ranges {ours_res} vs official {off_res}")
        elif kind == "enum":
            off_values = {v.name: v.number for v in off_d.value}
            for v in ours_d.value:
                counts["enum values"] += 1
                if off_values.get(v.name) != v.number:
                    diffs.append(f"{full}.{v.name} = {v.number}: official {off_values.get(v.name)!r}")
        elif kind == "service":
            counts["services"] += 1
            off_methods = {m.name: m for m in off_d.method}
            for m in ours_d.method:
                counts["methods"] += 1
                o = off_methods.get(m.name)
                if o is None:
                    diffs.append(f"{full}/{m.name}: method not official")
                    continue
                for what in ("input_type", "output_type", "client_streaming", "server_streaming"):
                    if getattr(m, what) != getattr(o, what):
                        diffs.append(f"{full}/{m.name}: {what} {getattr(m, what)!r} vs {getattr(o, what)!r}")
            missing = set(off_methods) - {m.name for m in ours_d.method}
            if missing:
                diffs.append(f"{full}: methods missing: {sorted(missing)}")
    return diffs, counts


# What must be present for the check to mean anything.
REQUIRED = [".tensorflow.TensorProto", ".tensorflow.serving.PredictRequest", ".tensorflow.serving.PredictionService",
            ".tensorflow.serving.ModelService", ".tensorflow.serving.ModelServerConfig", ".tensorflow.error.Code",
            ".tensorflow.DataType", ".tensorflow.SignatureDef", ".tensorflow.Example", ".tensorflow.serving.PredictionLog"]


def check(path):
    ours = our_index(path)
    official = official_index()
    diffs, counts = compare(ours, official)
    for r in REQUIRED:
        if r not in ours:
            diffs.append(f"{r}: missing from our schemas")
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return diffs, summary


def test_descriptors_match():
    path = os.environ.get("TENSORSERVE_FDS")
    assert path, "set TENSORSERVE_FDS to the output of target/release/examples/dump_descriptors"
    diffs, summary = check(path)
    assert not diffs, "\n".join(diffs)
    print(f"checked {summary}: 0 differences")


if __name__ == "__main__":
    diffs, summary = check(sys.argv[1])
    for d in diffs:
        print("DIFF", d)
    print(f"checked {summary}: {len(diffs)} differences")
    sys.exit(1 if diffs else 0)
