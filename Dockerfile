# fastdtm's container image: `fastdtm serve` as uid 65532, on a read-only root filesystem if wanted.
#
# The build installs wheels only, copied in from .tools/image/wheels, and never reaches the network: build with
# scripts/k8s/image.sh (`make image`), which fills that folder with wheels for the Python of BASE and then runs
#   docker build --network none --build-arg BASE=... -t fastdtm:<version> .
# BASE: any image with python3 and its venv module (glibc; musl is untested). Both stages use it: the venv's python
# is BASE's own. fastdtm's wheel is the compiled one (docs/compiled.md: the request path as C extensions by mypyc)
# when image.sh could build it for BASE's Python and glibc, else the pure-Python one; this file takes either.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
# Names this stage's untagged images, which image.sh prunes once they are a day old.
LABEL org.opencontainers.image.title="fastdtm-build"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A throwaway pip installs into a venv that has none, so neither pip nor setuptools reaches the final image.
RUN python3 -m venv /opt/pip && python3 -m venv --without-pip /opt/fastdtm
# Dependencies first: a change to fastdtm alone reuses this layer.
COPY .tools/image/wheels/deps/ /wheels/
RUN /opt/pip/bin/pip --python /opt/fastdtm/bin/python install -q --no-index --find-links /wheels -r /wheels/requirements.txt
COPY .tools/image/wheels/fastdtm/ /wheels/
ARG VERSION
RUN /opt/pip/bin/pip --python /opt/fastdtm/bin/python install -q --no-index --find-links /wheels "fastdtm${VERSION:+==$VERSION}" \
 && /opt/pip/bin/pip --python /opt/fastdtm/bin/python check \
 && /opt/fastdtm/bin/fastdtm version

FROM ${BASE}
# The working directory, where the embedded store's default ./fastdtm.db lands: the only place fastdtm writes.
# Mount an emptyDir or a volume there with a read-only root filesystem (or use --store redis://...).
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/fastdtm
COPY --from=build /opt/fastdtm /opt/fastdtm
ENV PATH=/opt/fastdtm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/fastdtm
USER 65532:65532
# DTM's HTTP and gRPC ports.
EXPOSE 36789 36790
ENTRYPOINT ["/opt/fastdtm/bin/fastdtm", "serve"]
# Last, so that a new commit only changes the labels.
ARG BASE
ARG VERSION
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fastdtm" \
      org.opencontainers.image.description="A DTM-compatible distributed-transaction coordinator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
