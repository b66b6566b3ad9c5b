"""An example of a PDE family that lives outside pinnkan (docs/adding_a_pde.md)."""
