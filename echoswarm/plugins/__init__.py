"""echoswarm's Locust plugins: how the users' samples reach the results directory, the web UI
tab, and the end-when-done plugin.

* ``collector`` — per Locust process, by role: a worker records and ships reports, the master
  merges them and writes the results directory, a local runner does both;
* ``compat`` — every use of Locust's private API, in one place;
* ``webui`` — the "echoswarm HDR" tab; ``autostop`` — end the test when every user is done.

Importing ``echoswarm.users`` registers the collector and the tab; ``autostop`` is opt-in.
"""
