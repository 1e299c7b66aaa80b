"""The warp-error plot of a sequence, as PNG, drawn by the service (``POST /v1/plots/warp``;
src/motion/plot.ts draws batch reports' plots the same way), since Blender's Python has no
image library that runs off the main thread. bpy-free; blocks, so the add-on calls it on a
worker thread and the batch script at its end."""
import http.client
import json
import os
import threading
from urllib.parse import urlsplit

from .files import write_atomic

#: What the service accepts (src/protocol/schemas.ts, WarpPlotRequest).
MAX_SERIES = 4
MAX_PAIRS = 10000


class PlotError(RuntimeError):
    """The plot could not be made; the message says why (the service's error code and text)."""


def plot_endpoint(ws_url):
    """ws://host:port/v1/ws -> (https?, host:port) of the same service."""
    parts = urlsplit(ws_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise PlotError("not a service URL: %r" % ws_url)
    return parts.scheme == "wss", parts.netloc


def plot_request(title, series):
    """The request body: ``series`` is [(label, pairs)], pairs as in core.motion.warp_summary."""
    if not series or len(series) > MAX_SERIES:
        raise PlotError("a plot takes 1 to %d series, got %d" % (MAX_SERIES, len(series)))
    body = {"title": title[:200], "series": []}
    for label, pairs in series:
        if len(pairs) > MAX_PAIRS:
            raise PlotError("a plot takes at most %d pairs per series, got %d" % (MAX_PAIRS, len(pairs)))
        body["series"].append({"label": label[:100], "pairs": [{"frame": int(p["frame"]), "error": float(p["error"])} for p in pairs]})
    return json.dumps(body).encode("utf-8")


def fetch_warp_plot(ws_url, token, title, series, timeout=30.0):
    """PNG bytes of the plot, or PlotError."""
    secure, netloc = plot_endpoint(ws_url)
    body = plot_request(title, series)
    conn = (http.client.HTTPSConnection if secure else http.client.HTTPConnection)(netloc, timeout=timeout)
    headers = {"Content-Type": "application/json", "Accept": "image/png"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request("POST", "/v1/plots/warp", body=body, headers=headers)
        res = conn.getresponse()
        data = res.read()
    except OSError as err:
        raise PlotError("the service did not answer the plot request: %s" % err) from None
    finally:
        conn.close()
    if res.status != 200:
        try:
            err = json.loads(data.decode("utf-8"))["error"]
            reason = "%s: %s" % (err["code"], err["message"])
        except (ValueError, KeyError, TypeError):
            reason = "HTTP %d" % res.status
        raise PlotError("the service refused the plot (%s)" % reason)
    return data


def write_warp_plot(png_path, ws_url, token, title, series, timeout=30.0):
    """Fetches the plot and writes it to ``png_path`` (whole or not at all). Returns None, or the
    reason it could not (PlotError, OSError)."""
    try:
        write_atomic(png_path, fetch_warp_plot(ws_url, token, title, series, timeout=timeout))
    except (PlotError, OSError) as err:
        return str(err)
    return None


def write_report(json_path, doc):
    write_atomic(json_path, json.dumps(doc, indent=2).encode("utf-8"))


def write_report_and_plot(json_path, doc, ws_url, token, title, label):
    """The Render Animation report: ``doc`` (with ``warp``, a core.motion.warp_summary) as JSON at
    once, then the plot next to it as ``<name>-warp.png`` on a daemon thread (returned), which
    records ``plot`` (the PNG's file name) or ``plotError`` in the JSON when it is done."""
    write_report(json_path, doc)
    png_path = os.path.splitext(json_path)[0] + "-warp.png"

    def run():
        error = write_warp_plot(png_path, ws_url, token, title, [(label, doc["warp"]["pairs"])])
        final = dict(doc)
        if error:
            final["plotError"] = error
        else:
            final["plot"] = os.path.basename(png_path)
        try:
            write_report(json_path, final)
        except OSError:
            pass

    thread = threading.Thread(target=run, name="depthcast-warp-plot", daemon=True)
    thread.start()
    return thread
