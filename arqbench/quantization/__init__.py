"""What is quantized and what it costs: a network's quantizable layers (``layers``) and bit policies over
them, with the budget's action wall (``policy``)."""
