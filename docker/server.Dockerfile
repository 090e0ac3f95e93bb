# The search server: the `server` binary and ONNX Runtime, nothing else (no libtorch, no
# compiler, no package added to the base). scripts/build_images.sh stages its context:
#   server   the release binary, built on the host with the project's toolchain
#   lib/     libonnxruntime.so out of PyPI's onnxruntime wheel (scripts/setup.sh); for the
#            CUDA image (stml-server-cuda: binary built with `--features cuda`) the GPU
#            build of ONNX Runtime, its CUDA provider and the CUDA 13 libraries it loads
#            (cuBLAS, cuRAND, CUDA runtime, cuDNN), out of PyPI wheels
# Run (host networking; the model read-only, the index in a volume):
#   docker run -d --network host -v "$PWD/model:/models:ro" -v stml-data:/data stml-server
# Settings come from STML_SERVER_* variables (STML_SERVER_API_KEY, STML_SERVER_PORT,
# STML_SERVER_HOST=0.0.0.0 to listen beyond loopback, ...) or a config file under /models.
# The CUDA image takes the GPU driver (libcuda.so.1) from the host; see README.md.
ARG BASE=stml-base:bookworm
FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin stml \
 && mkdir -p /data /models && chown stml:stml /data
COPY lib/ /opt/stml/lib/
COPY server /usr/local/bin/server
ENV ORT_DYLIB_PATH=/opt/stml/lib/libonnxruntime.so \
    LD_LIBRARY_PATH=/opt/stml/lib \
    STML_SERVER_MODEL=/models/model.onnx \
    STML_SERVER_INDEX_DIR=/data/index \
    STML_SERVER_HOST=127.0.0.1 \
    STML_SERVER_PORT=8080
USER stml
WORKDIR /data
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["server", "health"]
ENTRYPOINT ["server"]
CMD ["serve"]
