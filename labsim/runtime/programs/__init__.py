"""One adapter per real program: how a container of its image becomes a real process (binary,
arguments, environment and files translated to the container's real paths, the user it runs as)."""
