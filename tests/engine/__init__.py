"""The engine (mochapy): command line, config, net, neurons, parameters, snapshots, solvers."""
