"""Personal data: finding it in text and replacing it with its kind (``[NAME]``, ``[PHONE]``, ...)."""
