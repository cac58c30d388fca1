# jit-dispatch as a container: the CLI (`once`, `start`, `reap`, `doctor`, …) with git, as a
# non-root user. Built by CI from the wheel the same workflow builds (dist/); see
# docs/container.md. The install steps are docker/install.sh, which the tests run in a plain venv.
#
#   python -m build --wheel && docker build -t jit-dispatch .
#   docker run --rm jit-dispatch --version
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="jit-dispatch" \
      org.opencontainers.image.description="Turn CI runners into workers for a jit issue tracker: select, claim, run, settle, report." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# git: remote mode and the checkout a run works in; ca-certificates: HTTPS remotes and GitHub.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY docker/install.sh /tmp/install/install.sh
COPY requirements/action-github.lock /tmp/install/requirements.lock
COPY dist/ /tmp/install/dist/
RUN sh /tmp/install/install.sh /opt/jit-dispatch /tmp/install/dist /tmp/install/requirements.lock \
 && rm -rf /tmp/install

RUN useradd --create-home --uid 10001 --shell /bin/sh jit
USER 10001:10001
ENV PATH=/opt/jit-dispatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /home/jit
ENTRYPOINT ["jit-dispatch"]
CMD ["--help"]
