# The image helm/mandate runs: `docker build -t <registry>/mandate:0.1.0 .`
# Non-root (uid 10001, matching the chart's securityContext); writes nothing but /tmp.
FROM python:3.12-slim AS build
# a C compiler for mypyc, which compiles the request path (setup.py); the image it builds needs none
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY authz ./authz
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mandate
USER 10001:10001
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 9191 9090
ENTRYPOINT ["mandate"]
CMD ["serve", "--policies", "/etc/mandate/policies"]
