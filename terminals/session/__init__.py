"""The terminal session core, in small parts with one job each.

- :mod:`.admission`: who may open what (names, login, cluster, permission, limit, denials);
- :mod:`.core`: :class:`~.core.TerminalSession`, its state, its supervisor and its one end path;
- :mod:`.pump`: output from the pod, committed, then delivered, with a read-ahead bound;
- :mod:`.flow`: the flow-control window (bytes sent to the browser and not yet acknowledged);
- :mod:`.launcher`: the default container and shell fallback;
- :mod:`.upstream`: the cluster side (connection, pod lookup, the exec request);
- :mod:`.watchdog`: idle and maximum-duration deadlines;
- :mod:`.screen`: the screen model and command extraction, in budgeted steps;
- :mod:`.revocation`: live sessions re-checked for permission every few seconds;
- :mod:`.ending`: why a session ends (close code, message, end reason);
- :mod:`.tasks`: running tasks together, first to finish or fail decides.

The parts take their collaborators as arguments, so each is tested in-process with fakes;
``terminals.consumers`` wires them to Channels and the real cluster.
"""
