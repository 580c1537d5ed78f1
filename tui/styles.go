package tui

import (
	"image/color"

	"github.com/charmbracelet/lipgloss"
)

// Every style of the studio, defined once.
var (
	colAccent = lipgloss.AdaptiveColor{Light: "#5A3FC0", Dark: "#A78BFA"}
	colDim    = lipgloss.AdaptiveColor{Light: "#888888", Dark: "#6B7280"}
	colText   = lipgloss.AdaptiveColor{Light: "#1F2937", Dark: "#E5E7EB"}
	colErr    = lipgloss.AdaptiveColor{Light: "#B91C1C", Dark: "#F87171"}
	colOK     = lipgloss.AdaptiveColor{Light: "#047857", Dark: "#34D399"}
	colWarn   = lipgloss.AdaptiveColor{Light: "#B45309", Dark: "#FBBF24"}

	styleTitle     = lipgloss.NewStyle().Bold(true).Foreground(colAccent)
	styleHeader    = lipgloss.NewStyle().Foreground(colDim)
	styleLabel     = lipgloss.NewStyle().Foreground(colDim)
	styleLabelOn   = lipgloss.NewStyle().Foreground(colAccent).Bold(true)
	styleValue     = lipgloss.NewStyle().Foreground(colText)
	styleCursor    = lipgloss.NewStyle().Reverse(true)
	styleErr       = lipgloss.NewStyle().Foreground(colErr)
	styleOK        = lipgloss.NewStyle().Foreground(colOK)
	styleWarn      = lipgloss.NewStyle().Foreground(colWarn)
	styleDim       = lipgloss.NewStyle().Foreground(colDim)
	styleSelected  = lipgloss.NewStyle().Foreground(colAccent).Bold(true)
	styleTick      = lipgloss.NewStyle().Foreground(colWarn)
	styleTickOn    = lipgloss.NewStyle().Foreground(colErr).Bold(true)
	styleBarDone   = lipgloss.NewStyle().Foreground(colAccent)
	styleBarTodo   = lipgloss.NewStyle().Foreground(colDim)
	stylePane      = lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(colDim)
	stylePaneOn    = lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(colAccent)
	styleModal     = lipgloss.NewStyle().Border(lipgloss.DoubleBorder()).BorderForeground(colAccent).Padding(0, 1)
	styleHighlight = lipgloss.NewStyle().Border(lipgloss.ThickBorder()).BorderForeground(colWarn)
	styleNormalBox = lipgloss.NewStyle().Border(lipgloss.NormalBorder()).BorderForeground(colDim)

	// maskTint is the colour over the pixels a mask repaints (the mask
	// painting overlay, in the picture itself).
	maskTint = color.RGBA{R: 255, G: 40, B: 120, A: 255}

	// Curves of the noise schedule chart, in the order of scheduleNames.
	styleCurves = []lipgloss.Style{
		lipgloss.NewStyle().Foreground(lipgloss.Color("39")),
		lipgloss.NewStyle().Foreground(lipgloss.Color("78")),
		lipgloss.NewStyle().Foreground(lipgloss.Color("177")),
	}
)
