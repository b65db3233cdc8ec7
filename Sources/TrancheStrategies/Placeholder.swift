enum PlaceholderTrancheStrategies {}
