# First version of the deployment image: the search server only (no libtorch inside).
#   docker build -t stml-server .
#   docker run -p 8080:8080 -v $PWD/model.onnx:/models/model.onnx -v stml-data:/data stml-server
# The server needs nothing but the exported ONNX file (its manifest says how to preprocess)
# and ONNX Runtime's shared library, which is taken out of PyPI's onnxruntime wheel.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m pip download --no-deps -d /tmp/ort onnxruntime==1.31.1 \
 && mkdir -p /opt/ort \
 && unzip -j /tmp/ort/*.whl 'onnxruntime/capi/libonnxruntime.so.1.31.1' -d /opt/ort \
 && mv /opt/ort/libonnxruntime.so.1.31.1 /opt/ort/libonnxruntime.so
COPY . .
RUN cargo build --release -p server

FROM debian:bookworm-slim AS server
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data stml && mkdir -p /data /models && chown stml /data
COPY --from=build /src/target/release/server /usr/local/bin/server
COPY --from=build /opt/ort/libonnxruntime.so /usr/local/lib/libonnxruntime.so
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so
USER stml
EXPOSE 8080
VOLUME /data
ENTRYPOINT ["server"]
CMD ["serve", "--model", "/models/model.onnx", "--index", "/data/index", "--host", "0.0.0.0", "--port", "8080"]
