"""bistouryctl (also installed as ``bistoury``): the client that controls bistouryd."""
