# boxsync server image.
#
#   docker build -t boxsync .
#   docker run -d -p 8080:8080 -e BOXSYNC_API_KEY=... -v boxsync-box:/box boxsync
#
# The key comes only from the environment at run time (BOXSYNC_API_KEY, or API_KEY):
# without one the server refuses to start.

FROM python:3.11-slim AS builder
WORKDIR /src
# Only what setup.py packages: the wheel build never sees tests, caches or a local box.
COPY setup.py pyproject.toml README.md ./
COPY boxsync ./boxsync
COPY twisted/plugins/boxsync_plugin.py ./twisted/plugins/
# boxsync and every dependency as wheels, for an install with no index and no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are mounted for this step only, so they never become a layer; the plugin
# cache is written now, as root, because the server's user cannot write site-packages.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/boxsync-*.whl \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && groupadd --system --gid 10001 boxsync \
    && useradd --system --uid 10001 --gid boxsync --home-dir /box --no-create-home --shell /usr/sbin/nologin boxsync \
    && mkdir /box \
    && chown boxsync:boxsync /box
# boxsync:boxsync, by number so that a runtime can tell it is not root.
USER 10001:10001
WORKDIR /box
VOLUME /box
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["twistd", "-n", "--pidfile=", "boxsync", "--listen", "tcp:8080:interface=0.0.0.0", "--box", "/box"]
