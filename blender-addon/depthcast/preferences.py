"""Add-on preferences: where the service is, its token, and "start a local service"."""
import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from . import client
from .preference_values import ADDON_ID, Defaults


def _reconnect(self, context):
    if client.is_started():
        client.restart(context)


class DepthcastPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_url: StringProperty(
        name="Server URL", default=Defaults.server_url, update=_reconnect,
        description="WebSocket address of the depthcast service (ws://host:port/v1/ws)")
    token: StringProperty(
        name="Token", default="", subtype="PASSWORD", update=_reconnect,
        description="Access token of the service (sent as 'Authorization: Bearer'); empty if it needs none")
    auto_connect: BoolProperty(
        name="Connect automatically", default=True,
        description="Connect when a generation starts and keep reconnecting (with backoff) after drops")
    connect_timeout: FloatProperty(name="Connect timeout", default=5.0, min=0.5, max=60.0, unit="TIME_ABSOLUTE")

    start_local_service: BoolProperty(
        name="Start a local service", default=False, update=_reconnect,
        description="Run 'depthcast serve' on a free local port while Blender runs, and stop it on exit")
    service_command: StringProperty(
        name="Command", default=Defaults.service_command,
        description="How to run the depthcast CLI. 'npx depthcast' (the default): the folder this add-on was built from, else 'depthcast' on PATH; or e.g. 'node /path/to/depthcast/bin/depthcast.js'")
    service_models_dir: StringProperty(name="Models folder", default="", subtype="DIR_PATH",
                                       description="--models-dir of the local service (empty: its default)")
    service_model: StringProperty(name="Model", default="", description="--model of the local service")
    service_args: StringProperty(name="Extra arguments", default="", description="More arguments for 'serve'")

    def draw(self, context):
        layout = self.layout
        box = layout.box()
        row = box.row()
        state, message = client.connection_status()
        row.label(text="Status: %s" % state, icon=client.status_icon(state))
        row.operator("depthcast.connect", text="Reconnect" if state != "disconnected" else "Connect",
                     icon="FILE_REFRESH")
        row.operator("depthcast.disconnect", text="", icon="CANCEL")
        if message:
            for line in client.wrap(message, 90):
                box.label(text=line)

        col = layout.column()
        col.prop(self, "start_local_service")
        if self.start_local_service:
            sub = col.box().column()
            sub.prop(self, "service_command")
            sub.prop(self, "service_models_dir")
            sub.prop(self, "service_model")
            sub.prop(self, "service_args")
            svc = client.local_service()
            if svc is not None:
                sub.label(text="Running: %s (log: %s)" % (svc.url, svc.log_path or "-"),
                          icon="CHECKMARK" if svc.running else "ERROR")
        else:
            col.prop(self, "server_url")
        col.prop(self, "token")
        col.prop(self, "auto_connect")
        col.prop(self, "connect_timeout")


classes = (DepthcastPreferences,)
