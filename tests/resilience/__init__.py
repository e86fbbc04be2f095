"""The resilience suite (issue 13): bank transfers through three fastdtm nodes on a 3+3 Redis Cluster while
nodes and Redis masters are killed, stopped, paused and failed over; afterwards nothing may be lost or stuck
and the money must add up."""
