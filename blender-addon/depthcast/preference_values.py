"""The add-on preferences' values, for the modules that read them (client.py) without the
preferences' UI (preferences.py, which draws the client's state): one direction of import."""
import bpy

ADDON_ID = __package__


class Defaults:
    """Preference values used when the add-on's preferences are not registered (the batch
    script and tests import the modules without enabling the add-on)."""

    server_url = "ws://127.0.0.1:7788/v1/ws"
    token = ""
    start_local_service = False
    service_command = "npx depthcast"
    service_models_dir = ""
    service_model = ""
    service_args = ""
    auto_connect = True
    connect_timeout = 5.0


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return Defaults
    return addon.preferences
