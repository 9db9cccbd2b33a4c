"""The peer API: what agents of one farm fetch from each other, signed with the farm's secret."""
