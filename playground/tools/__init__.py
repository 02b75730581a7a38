"""Tools the model may call: sources (MCP servers, the code interpreter) and the toolbox."""
