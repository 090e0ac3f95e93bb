# The trainer: the `trainer` binary with the libtorch libraries it links (CPU) and the
# pretrained backbone weights. Built by scripts/build_images.sh from a staged context:
#   trainer     the release binary, built on the host with the project's toolchain
#   lib/        the libtorch shared libraries the binary needs (scripts/setup.sh)
#   weights/    the pretrained backbones (scripts/setup.sh)
# Fit on a mounted folder of images and export the model (runs/ is written as the
# calling user, so the files on the host are yours):
#   docker run --rm --network none --user "$(id -u):$(id -g)" -v "$PWD/photos:/images:ro" \
#     -v "$PWD/runs:/runs" stml-trainer fit --data /images --out /runs/r1
#   docker run --rm --network none --user "$(id -u):$(id -g)" -v "$PWD/runs:/runs" \
#     stml-trainer export --run /runs/r1 --out /runs/r1/model.onnx
ARG BASE=stml-base:bookworm
FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --home-dir /runs --no-create-home --shell /usr/sbin/nologin stml \
 && mkdir -p /runs && chown stml:stml /runs
COPY lib/ /opt/stml/lib/
COPY weights/ /opt/stml/weights/
COPY trainer /usr/local/bin/trainer
ENV LD_LIBRARY_PATH=/opt/stml/lib \
    STML_DEPS=/opt/stml
USER stml
WORKDIR /runs
VOLUME /runs
ENTRYPOINT ["trainer"]
CMD ["--help"]
