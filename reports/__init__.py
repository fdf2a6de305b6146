"""Tables, figures and the HTML energy report."""
