# syntax=docker/dockerfile:1
# One image for both processes: tee-exporter and tee-audit (the Helm chart runs them as two containers of one
# pod). Build: docker build -t tee-monitor:0.1.0 .
#
# libvirt comes from bookworm-backports, as on the hosts (scripts/install-system.sh): the client library talks
# to the host's libvirtd through the mounted socket, and libvirt-python is built against it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/bookworm-backports.sources \
 && apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config \
 && apt-get install -y --no-install-recommends -t bookworm-backports libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY audit/ audit/
# Wheels for the project and every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
RUN printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/bookworm-backports.sources \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports libvirt0 \
 && apt-get install -y --no-install-recommends conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
 && rm -rf /wheels \
 && python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The unprivileged user the shipper runs as; uid/gid 65532 match the chart's defaults. The exporter container
# overrides the user with uid 0 (see docs/helm.md: libvirt's read-write socket).
RUN groupadd --system --gid 65532 tee \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tee
USER 65532:65532
# 9940 tee-exporter /metrics, 9941 tee-audit /metrics, 9942 tee-audit Alertmanager webhook.
EXPOSE 9940 9941 9942
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
CMD ["tee-exporter"]
