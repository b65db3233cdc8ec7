enum PlaceholderTrancheEngine {}
