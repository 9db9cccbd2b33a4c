"""The agent's narrow services, built and wired by the composition root (app/agent.py) and handed to whoever needs one."""
