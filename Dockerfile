# tensorserve's image: built with cargo, run on Debian slim as a non-root user, with ONNX
# Runtime's library from its pinned, checksummed wheel so both engines serve. Behaves like
# tensorflow/serving: ports 8500 (gRPC) and 8501 (REST), MODEL_NAME and MODEL_BASE_PATH, extra
# flags passed through. `docker build -t tensorserve .`

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY examples examples
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin tensorserve \
 && strip target/release/tensorserve

FROM python:3.11-slim-bookworm AS onnxruntime
COPY deploy/docker/onnxruntime-wheel.txt /tmp/
RUN pip download --no-cache-dir --no-deps --require-hashes -r /tmp/onnxruntime-wheel.txt -d /tmp/wheel \
 && python -m zipfile -e /tmp/wheel/onnxruntime-*.whl /tmp/ort \
 && mkdir -p /opt/onnxruntime \
 && cp /tmp/ort/onnxruntime/capi/libonnxruntime.so.* /tmp/ort/onnxruntime/capi/libonnxruntime_providers_shared.so /opt/onnxruntime/

FROM debian:bookworm-slim
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin tensorserve \
 && mkdir -p /models && chown tensorserve /models
COPY --from=build /src/target/release/tensorserve /usr/local/bin/tensorserve
COPY --from=onnxruntime /opt/onnxruntime /opt/onnxruntime
COPY deploy/docker/tensorserve_entrypoint.sh /usr/local/bin/tensorserve_entrypoint.sh
COPY deploy/docker/monitoring.config /etc/tensorserve/monitoring.config
ENV MODEL_NAME=model \
    MODEL_BASE_PATH=/models \
    ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.32.0
EXPOSE 8500 8501
USER 1000
ENTRYPOINT ["/usr/local/bin/tensorserve_entrypoint.sh"]
