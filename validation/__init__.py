"""How right we are: predictions joined with measurements, errors per component, reports, and checks
against published results."""
