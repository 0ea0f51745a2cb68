"""The LangGraph agents (supervisor, analyst, portfolio and trade agents) arrive with their own issue;
nothing lives here yet."""
