"""The baseline for `hearth bench tools`: the same `echo` tool served by the
official MCP Python SDK (MCPServer, formerly FastMCP) over streamable HTTP.

usage: python mcp_echo_server.py PORT
"""
import logging
import sys

from mcp.server import MCPServer

logging.disable(logging.WARNING)
mcp = MCPServer("bench-echo-python", version="0.1.0", log_level="WARNING")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


if __name__ == "__main__":
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        streamable_http_path="/mcp",
        stateless_http=False,
        json_response=False,
    )
