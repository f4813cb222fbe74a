"""Mail: render a digest (HTML and text), build the message, and deliver it over SMTP."""
