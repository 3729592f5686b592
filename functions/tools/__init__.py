"""Tools that models use: web search and page fetching, shared by MCP and Responses.

Not an API area: ``functions.mcp`` serves these tools over MCP and ``functions.responses``
runs them server-side. ``toolbox.ToolBox`` is the one entry point.
"""
