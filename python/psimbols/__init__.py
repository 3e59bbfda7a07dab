"""psimbols client for Python: prove a key over WebSocket, get an encrypted channel (docs/PROTOCOL.md)."""
from .client import ChannelInfo, Client, Notice, backoff_delay, connect
from .errors import ErrorCode, PsimbolsError
from .keys import KEY_TYPES, PublicKey, SigningKey, generate, generate_key_file, load_key, load_public_key
from .known_servers import FileKnownServers, MemoryKnownServers, default_known_servers_path

__all__ = [
    "ChannelInfo", "Client", "Notice", "backoff_delay", "connect", "ErrorCode", "PsimbolsError", "KEY_TYPES", "PublicKey",
    "SigningKey", "generate", "generate_key_file", "load_key", "load_public_key", "FileKnownServers", "MemoryKnownServers",
    "default_known_servers_path",
]
__version__ = "0.1.0"
